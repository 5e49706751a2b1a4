from cedge.cli import app

app()
