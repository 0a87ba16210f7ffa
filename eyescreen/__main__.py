from eyescreen.cli import main

main()
