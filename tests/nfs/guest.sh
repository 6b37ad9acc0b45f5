#!/bin/bash
# The NFS lane's side inside the VM (started by scripts/test-nfs; not meant to
# be run on a host). It runs as PID 1 after the initramfs has switched to the
# host's / (read-only over 9p), so every host path is visible at its own name.
#
# Settings come from the kernel command line as environment variables:
#   LANE_OUT      host folder shared writable over 9p (tag "out"): results go there
#   LANE_MODULES  the extracted kernel's lib/modules folder
#   HANDOFF_BIN   the handoff binary to test
#   LANE_VERS     4.2 (default mount options) or 3 (vers=3,nolock)
#   LANE_RUNS_PUBLISH, LANE_RUNS_SEAL, LANE_RUNS_LOOKED, LANE_RUNS_NAIVE
#   LANE_ONLY     optional comma-separated scenario names to run
#
# Topology: knfsd in the root network namespace exports an ext4 file system on
# the virtio disk; node a (writer) and node b (reader) are network namespaces
# with a veth pair each, and each mounts the export itself, so each is its own
# NFS client with its own caches. The mount points /mnt/a and /mnt/b are
# visible to every process; what matters is which client a mount belongs to.

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export LC_ALL=C HOME=/run/lane
T_INIT=${EPOCHREALTIME/./}

off() {
    echo "nfs-guest: exit=$1"
    sync
    /bin/busybox poweroff -f
    sleep 5
}

mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mount -t tmpfs tmpfs /run
mkdir -p /run/lane /run/lock
ln -sf /proc/self/fd /dev/fd
if ! mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=none out "$LANE_OUT"; then
    echo "nfs-guest: cannot mount the results share on $LANE_OUT"
    off 1
fi
exec > >(tee -a "$LANE_OUT/guest.log") 2>&1
# The host has no /lib/modules of this kernel (and may have no such folder to
# mount over), so modprobe is pointed at the extracted tree, for us and for the
# kernel's own module requests.
printf '#!/bin/sh\nexec /usr/sbin/modprobe -d %s "$@"\n' "${LANE_MODULES%/lib/modules}" >/run/lane/modprobe
chmod +x /run/lane/modprobe
echo /run/lane/modprobe >/proc/sys/kernel/modprobe
mount -t tmpfs tmpfs /mnt
mount -t tmpfs tmpfs /var/lib/nfs
mkdir -p /mnt/export /mnt/a /mnt/b /var/lib/nfs/rpc_pipefs /var/lib/nfs/v4recovery /run/rpcbind /run/netns
touch /var/lib/nfs/etab /var/lib/nfs/rmtab /var/lib/nfs/xtab
hostname nfs-lane

HB=$HANDOFF_BIN
VERS=${LANE_VERS:-4.2}
R=$LANE_OUT/results.txt
: >"$R"
ms_since() { echo $(( (${EPOCHREALTIME/./} - $1) / 1000 )); }

fail_setup() { echo "nfs-guest: setup failed: $*"; off 1; }

# ---- server -----------------------------------------------------------------
for m in virtio_blk ext4 nfsd nfsv4 nfsv3 veth; do
    /run/lane/modprobe "$m" || fail_setup "modprobe $m"
done
for i in $(seq 50); do [ -b /dev/vda ] && break; sleep 0.1; done
mount -t ext4 /dev/vda /mnt/export || fail_setup "mount /dev/vda"
mount -t nfsd nfsd /proc/fs/nfsd || fail_setup "mount nfsd"
# The shortest grace and lease the server accepts, so opens work sooner.
echo 10 >/proc/fs/nfsd/nfsv4gracetime
echo 10 >/proc/fs/nfsd/nfsv4leasetime
ip link set lo up
rpcbind || fail_setup rpcbind
exportfs -o rw,no_root_squash,no_subtree_check,insecure,fsid=0 '*:/mnt/export' || fail_setup exportfs
rpc.mountd || fail_setup rpc.mountd
rpc.nfsd 8 || fail_setup rpc.nfsd
T_NFSD=${EPOCHREALTIME/./}

# ---- client nodes -----------------------------------------------------------
n=1
for node in a b; do
    ip netns add $node
    ip link add srv$node type veth peer name eth0 netns $node
    ip addr add 10.0.$n.1/24 dev srv$node
    ip link set srv$node up
    ip -n $node addr add 10.0.$n.2/24 dev eth0
    ip -n $node link set eth0 up
    ip -n $node link set lo up
    n=$((n + 1))
done

# Warm the compiled-component cache while the server's grace period runs.
export HANDOFF_CACHE_DIR=/run/lane/cache
mkdir -p /run/lane/empty
t=${EPOCHREALTIME/./}
"$HB" ls --root /run/lane/empty >/dev/null || fail_setup "handoff ls (cache warm-up)"
echo "nfs-guest: compiled-component cache warmed in $(ms_since $t) ms"

n=1
for node in a b; do
    if [ "$VERS" = 3 ]; then
        opts=(-o vers=3,nolock 10.0.$n.1:/mnt/export)
    else
        opts=(10.0.$n.1:/)
    fi
    nsenter --net=/run/netns/$node mount -t nfs "${opts[@]}" /mnt/$node || fail_setup "mount on node $node"
    n=$((n + 1))
done
grep ' /mnt/[ab] ' /proc/mounts | sed 's/^/nfs-guest: mount: /'
# Under NFSv4 each node must be its own client of the server (NFSv3 has no
# client ids, so 0 is expected there).
ls /proc/fs/nfsd/clients 2>/dev/null | wc -l | sed 's/^/nfs-guest: nfsd clients: /'
# The first open after boot waits out the grace period; take it here.
t=${EPOCHREALTIME/./}
echo ready >/mnt/a/.ready || fail_setup "write through node a"
cat /mnt/b/.ready >/dev/null || fail_setup "read through node b"
echo "nfs-guest: first open through the mounts took $(ms_since $t) ms"
echo "nfs-guest: boot to mounted: $(( (${EPOCHREALTIME/./} - T_INIT) / 1000 )) ms since init (knfsd up at $(( (T_NFSD - T_INIT) / 1000 )) ms)"
echo "boot_ms=$(( (${EPOCHREALTIME/./} - T_INIT) / 1000 ))" >>"$R"

# ---- payloads ---------------------------------------------------------------
# A small adapter-like payload on the guest's tmpfs: two small files and one
# of 2 MiB. Each run changes the config so every step differs.
BLOB=/run/lane/blob
head -c $((2 << 20)) /dev/urandom >"$BLOB"
head -c 65536 /dev/urandom >/run/lane/tok

make_payload() { # DIR STEP
    mkdir -p "$1"
    printf '{"step":%s,"r":8,"alpha":16}\n' "$2" >"$1/adapter_config.json"
    cp "$BLOB" "$1/adapter_model.safetensors"
    cp /run/lane/tok "$1/tokenizer.json"
}

files_of() { # the "files" array of handoff's JSON output
    sed -n 's/.*"files":\(\[[^]]*\]\).*/\1/p' "$1"
}

# ---- handoff scenarios ------------------------------------------------------
# B starts `handoff wait` on its own mount; once it is polling, A runs the
# writer command. visible_after = B's wait returning minus A's command
# returning, both read from this one guest clock.
VIS=/run/lane/visible_ms
: >"$VIS"

# run_pair NAME ROOT STEP B_HEAD_START_S WRITER-COMMAND...
# Sets RUN_OK (1/0) and RUN_VIS_MS.
run_pair() {
    local name=$1 root=$2 k=$3 head=$4
    shift 4
    local d=/run/lane/$name.$k
    mkdir -p "$d"
    (
        "$HB" wait --root "/mnt/b/$root" --step "$k" --verify hash --timeout "$B_TIMEOUT" --json \
            >"$d/b.json" 2>"$d/b.err"
        echo "$? ${EPOCHREALTIME/./}" >"$d/b.end"
    ) &
    local bpid=$!
    sleep "$head"
    "$@" >"$d/a.json" 2>"$d/a.err"
    local arc=$? ta=${EPOCHREALTIME/./}
    wait $bpid
    local brc tb
    read -r brc tb <"$d/b.end"
    RUN_VIS_MS=$(( (tb - ta) / 1000 ))
    RUN_OK=1
    local why=""
    if [ $arc != 0 ]; then RUN_OK=0; why="writer exit $arc: $(head -c 300 "$d/a.err")"; fi
    if [ $brc != 0 ]; then RUN_OK=0; why="$why reader exit $brc: $(head -c 300 "$d/b.err")"; fi
    if [ $RUN_OK = 1 ] && [ "$(files_of "$d/a.json")" != "$(files_of "$d/b.json")" ]; then
        RUN_OK=0; why="reader's files differ from the writer's"
    fi
    echo "nfs-guest: $name step=$k ok=$RUN_OK visible_after_ms=$RUN_VIS_MS $why"
    echo "$RUN_VIS_MS" >>"$VIS"
}

want() { [ -z "${LANE_ONLY:-}" ] || [[ ",$LANE_ONLY," == *",$1,"* ]]; }

report() { # NAME TOOL RUNS FAILURES
    echo "nfs: scenario=$1 tool=$2 runs=$3 failures=$4"
}

scenario_publish() {
    local runs=${LANE_RUNS_PUBLISH:-5} fails=0 i k
    mkdir -p /mnt/a/pub
    ls /mnt/b/pub >/dev/null
    B_TIMEOUT=60s
    for i in $(seq "$runs"); do
        k=$i
        rm -rf /run/lane/src.pub; make_payload /run/lane/src.pub "$k"
        run_pair publish-seen pub "$k" 2 "$HB" publish --root /mnt/a/pub --step "$k" /run/lane/src.pub --json
        [ $RUN_OK = 1 ] || fails=$((fails + 1))
    done
    report publish-seen handoff "$runs" "$fails"
}

scenario_seal() {
    local runs=${LANE_RUNS_SEAL:-5} fails=0 i k
    mkdir -p /mnt/a/seal
    ls /mnt/b/seal >/dev/null
    B_TIMEOUT=60s
    for i in $(seq "$runs"); do
        k=$i
        # The writer writes the payload in place through its own mount.
        run_pair seal-seen seal "$k" 2 \
            bash -c 'make_payload "$1" "$2" && exec "$3" seal --root /mnt/a/seal --step "$2" --json' \
            _ "/mnt/a/seal/step_$k" "$k" "$HB"
        [ $RUN_OK = 1 ] || fails=$((fails + 1))
    done
    report seal-seen handoff "$runs" "$fails"
}

scenario_looked() {
    local runs=${LANE_RUNS_LOOKED:-3} fails=0 i k rc
    mkdir -p /mnt/a/looked
    ls /mnt/b/looked >/dev/null
    B_TIMEOUT=90s
    for i in $(seq "$runs"); do
        k=$i
        # B looks once and gives up: the client now caches "step_k: no such file".
        "$HB" wait --root /mnt/b/looked --step "$k" --timeout 1s >/dev/null 2>&1
        rc=$?
        [ $rc = 3 ] || echo "nfs-guest: looked-before: the 1 s wait exited $rc, expected 3"
        run_pair looked-before looked "$k" 1 \
            bash -c 'make_payload "$1" "$2" && exec "$3" seal --root /mnt/a/looked --step "$2" --json' \
            _ "/mnt/a/looked/step_$k" "$k" "$HB"
        if [ $RUN_OK != 1 ] || [ "$RUN_VIS_MS" -gt 2000 ]; then fails=$((fails + 1)); fi
    done
    report looked-before handoff "$runs" "$fails"
}
export -f make_payload
export BLOB

# ---- the naive recipe -------------------------------------------------------
# tests/nfs/naive.py writes with plain writes and no fsync on node a and
# polls for STABLE on node b; its docstring says exactly what each side does.
scenario_naive() {
    local runs=${LANE_RUNS_NAIVE:-5} line
    python3 "$(dirname "$LANE_INIT")/naive.py" /mnt/a/naive /mnt/b/naive "$runs" "${LANE_NAIVE_PAUSE:-50}" \
        >/run/lane/naive.out 2>&1
    sed 's/^/nfs-guest: /' /run/lane/naive.out
    line=$(grep '^naive: runs=' /run/lane/naive.out)
    local fails=${line#*failures=}
    fails=${fails%% *}
    report naive-reader naive "$runs" "${fails:-0}"
}

T_RUN=${EPOCHREALTIME/./}
# The scenarios run at the same time, each in its own directory of the export
# (so each has its own directory caches on node b): most of their time is
# spent waiting for caches to expire, and one after another would take about
# 9 minutes. Each one's runs are sequential.
mkdir -p /run/lane/report
pids=()
for s in publish-seen seal-seen looked-before naive-reader; do
    want $s || continue
    case $s in
        publish-seen) scenario_publish ;;
        seal-seen) scenario_seal ;;
        looked-before) scenario_looked ;;
        naive-reader) scenario_naive ;;
    esac >/run/lane/report/$s 2>&1 &
    pids+=($!)
done
# Wait for these by id: a bare `wait` would also wait for the tee above.
wait "${pids[@]}"
for s in publish-seen seal-seen looked-before naive-reader; do
    [ -f /run/lane/report/$s ] || continue
    grep -v '^nfs: scenario=' /run/lane/report/$s
    grep '^nfs: scenario=' /run/lane/report/$s | tee -a "$R"
done

if [ -s "$VIS" ]; then
    sort -n "$VIS" | awk '{v[NR]=$1} END {p=v[int((NR+1)/2)]; printf "nfs: visible_after_ms p50=%d max=%d runs=%d\n", p, v[NR], NR}' | tee -a "$R"
fi
echo "run_ms=$(ms_since $T_RUN)" >>"$R"
umount /mnt/a /mnt/b 2>/dev/null
off 0
