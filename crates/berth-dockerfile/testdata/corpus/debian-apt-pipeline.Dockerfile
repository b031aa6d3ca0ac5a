FROM debian:bookworm-slim

LABEL maintainer="Example Maintainers <maintainers@example.org>"

ENV WEB_VERSION 1.25.4
ENV PKG_RELEASE   1~bookworm

RUN set -x \
# create the system user and group first, so their ids are stable
    && groupadd --system --gid 101 web \
    && useradd --system --gid web --no-create-home --home /nonexistent --comment "web user" --shell /bin/false --uid 101 web \
    && apt-get update \
    && apt-get install --no-install-recommends --no-install-suggests -y gnupg1 ca-certificates \
    && \
    KEY=573BFD6B3D8FBC641079A6ABABF5BD827BD9BF62; \
    found=''; \
    for server in \
        hkp://keyserver.ubuntu.com:80 \
        pgp.mit.edu \
    ; do \
        echo "Fetching GPG key $KEY from $server"; \
        gpg1 --keyserver "$server" --keyserver-options timeout=10 --recv-keys "$KEY" && found=yes && break; \
    done; \
    test -z "$found" && echo >&2 "error: failed to fetch GPG key $KEY" && exit 1; \
    apt-get remove --purge --auto-remove -y gnupg1 && rm -rf /var/lib/apt/lists/* \
    && dpkgArch="$(dpkg --print-architecture)" \
    && case "$dpkgArch" in \
        amd64|arm64) echo "native packages" ;; \
        *) echo "building from source" ;; \
    esac \
    && ln -sf /dev/stdout /var/log/web/access.log \
    && ln -sf /dev/stderr /var/log/web/error.log

COPY docker-entrypoint.sh /
COPY 10-listen-on-ipv6-by-default.sh /docker-entrypoint.d
ENTRYPOINT ["/docker-entrypoint.sh"]

EXPOSE 80

STOPSIGNAL SIGQUIT

CMD ["web", "-g", "daemon off;"]
