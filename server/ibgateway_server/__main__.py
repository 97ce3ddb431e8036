"""``python -m ibgateway_server``: the same as the ``ibgw`` command."""

from ibgateway_server.cli import main

if __name__ == "__main__":
    main()
