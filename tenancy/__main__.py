from tenancy.cli import run

run()
