from jobgroup.cli.main import main

main()
