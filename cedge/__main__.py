from cedge.cli import main

main()
