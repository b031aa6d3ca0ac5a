#!/bin/bash
# bench/profile.sh: where a `berth run --rm --network none base true` spends
# its time, phase by phase (BERTH_TRACE=1 marks from the CLI, the engine,
# the runtime and the container's init, on one monotonic clock), medians of
# N runs (default 50). Writes bench/profile.md. As root.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-50}
cargo build --release --locked -p berth 2>&1 | tail -1 >&2
berth=$PWD/target/release/berth
work=$(mktemp -d /tmp/berth-profile.XXXXXX)
trap 'rm -rf "$work"' EXIT
export BERTH_ROOT=$work/root BERTH_DEFAULT_NETWORK=none
scripts/busybox-rootfs.sh "$work/busybox.tar" >/dev/null
"$berth" import --change 'CMD ["sh"]' "$work/busybox.tar" base:latest >/dev/null
"$berth" run --rm base true # warm up
for i in $(seq "$N"); do
    BERTH_TRACE=1 "$berth" run --rm base true 2>"$work/t$i.txt"
done
# Each run: phases in time order, each with the time since the one before.
for f in "$work"/t*.txt; do
    grep '^berth-trace ' "$f" | sort -k3,3n |
        awk 'NR==1 {p=$3} {ph=substr($0, index($0,$4)); printf "%s\t%.3f\n", ph, ($3-p)/1000; p=$3}'
done >"$work/all.tsv"
total=$(for f in "$work"/t*.txt; do
    grep '^berth-trace ' "$f" | sort -k3,3n | awk 'NR==1{s=$3} END{printf "%.3f\n", ($3-s)/1000}'
done | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
{
    echo "# Where \`run --rm base true\` spends its time"
    echo
    echo "$(date -u +%Y-%m-%d), berth $(git rev-parse --short HEAD), $(nproc) cores, $(uname -r), cgroups: $(stat -fc %T /sys/fs/cgroup); medians of $N runs, release build (\`bench/profile.sh\`). Each row: the time from the mark before to this one (BERTH_TRACE=1); the init's rows run in the container's init, the others in the CLI. This VM's speed for file-system work drifts by up to 2x within minutes: compare rows within one table, and whole commands with the bench, which times the tools side by side."
    echo
    echo "| phase (ends at) | median ms |"
    echo "| --- | --- |"
    # Phases in the order of the first run.
    grep '^berth-trace ' "$work/t1.txt" | sort -k3,3n | awk '{print substr($0, index($0,$4))}' |
        while IFS= read -r ph; do
            m=$(awk -F'\t' -v p="$ph" '$1==p {print $2}' "$work/all.tsv" | sort -n |
                awk '{a[NR]=$1} END{if (NR) printf "%.2f", a[int((NR+1)/2)]}')
            echo "| $ph | $m |"
        done
    echo "| **total, first mark to last** | **$total** |"
    echo
    echo 'Before the first mark: exec of the binary and its dynamic loading (see the start row of bench/results.md for the whole command). After the last: the exit of the process. The removal row is what `run --rm` does before it answers (the record renamed away; the network, volumes and layer released; the events); the deletion of the files, cgroups and runtime record follows in a child, after the answer.'
} >bench/profile.md
cat bench/profile.md
