from stabletune.cli import main

raise SystemExit(main())
