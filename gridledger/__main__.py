from gridledger.cli import main

raise SystemExit(main())
