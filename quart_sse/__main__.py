from quart_sse.cli import main

raise SystemExit(main())
