from livehub.cli import main

main()
