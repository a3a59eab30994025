"""`python -m fastcnn bench | info`."""
import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastcnn",
                                     description="fastcnn command line")
    sub = parser.add_subparsers(dest="command", required=True)
    from fastcnn._bench import cli
    cli.add_arguments(sub.add_parser("bench", help="measure fastcnn side by side with rivals"))
    sub.add_parser("info", help="print fastcnn.show_config()")
    args = parser.parse_args(argv)
    if args.command == "bench":
        cli.run(args)
    elif args.command == "info":
        import fastcnn
        fastcnn.show_config()
    return 0


if __name__ == "__main__":
    sys.exit(main())
