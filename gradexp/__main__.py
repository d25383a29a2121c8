from gradexp.cli import entry

entry()
