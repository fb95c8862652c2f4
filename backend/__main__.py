import sys

from backend.job import guard_process

try:  # before the command's heavy imports: a signal or the parent's death during them is a cancel
    guard_process(importing=True)
    from backend.cli import main
except KeyboardInterrupt as stop:
    print(f"cancelled: {stop}", file=sys.stderr)
    sys.exit(3)

sys.exit(main())
