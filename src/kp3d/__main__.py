from kp3d.cli import main

raise SystemExit(main())
