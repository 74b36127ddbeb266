from pullwarden.cli import main

main()
