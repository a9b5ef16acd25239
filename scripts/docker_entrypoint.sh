#!/bin/sh
# The image's entry point. The web server brings the database schema up to date first (the workers
# do not, so two containers never migrate at once); then the service's command runs.
set -e
if [ "$1" = "daphne" ]; then
  python manage.py migrate --noinput
fi
exec "$@"
