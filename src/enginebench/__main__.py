from enginebench.cli import main

raise SystemExit(main())
