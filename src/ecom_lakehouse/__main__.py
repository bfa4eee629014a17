from ecom_lakehouse.cli import main

raise SystemExit(main())
