from edgeasr.cli import main

main()
