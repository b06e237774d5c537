from cnntui.cli import main

raise SystemExit(main())
