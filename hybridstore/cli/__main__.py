from hybridstore.cli import main

raise SystemExit(main())
