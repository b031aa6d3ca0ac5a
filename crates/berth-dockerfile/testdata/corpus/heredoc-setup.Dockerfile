# syntax=docker/dockerfile:1
FROM ubuntu:24.04
ARG DEBIAN_FRONTEND=noninteractive
RUN <<EOT bash
  set -euo pipefail
  apt-get update
  apt-get install -y --no-install-recommends \
    build-essential \
    git
  rm -rf /var/lib/apt/lists/*
EOT
COPY --chmod=0755 <<'EOF' /usr/local/bin/entrypoint
#!/bin/sh
set -e
if [ "${1#-}" != "$1" ]; then
  set -- app "$@"
fi
exec "$@"
EOF
COPY <<-EOF /etc/app.conf
	listen = 0.0.0.0:8080
	workers = ${WORKERS:-4}
	EOF
RUN <<EOF
echo "setup done"
EOF
ENTRYPOINT ["entrypoint"]
