from hatchway.cli.main import main

main()
