#!/bin/bash
# NAT state sync at scale (issue 17): N (default 10,000) conntrack entries of one VIP created on a
# holder namespace, replicated by conntrackd (FTFW over a dedicated veth, the agent's settings) to a
# peer: sync bytes and packets, CPU of both conntrackds, and how long the peer's commit takes.
# Root; two namespaces of its own (kes<pid>-n1/n2), removed on exit. Usage: N=10000 bench/sync_scale.sh
set -u
R=kes$$; D=$(mktemp -d)
N=${N:-10000}
cleanup() { for n in n1 n2; do [ -f $D/$n.pid ] && kill $(cat $D/$n.pid) 2>/dev/null; done; sleep 0.3; for n in n1 n2; do ip netns del $R-$n 2>/dev/null; done; rm -rf "$D"; }
trap cleanup EXIT INT TERM
e() { ip netns exec $R-$1 "${@:2}"; }
for n in n1 n2; do ip netns add $R-$n; e $n ip link set lo up; done
ip link add sync0 netns $R-n1 type veth peer name sync0 netns $R-n2
e n1 ip addr add 198.51.100.1/30 dev sync0; e n1 ip link set sync0 up
e n2 ip addr add 198.51.100.2/30 dev sync0; e n2 ip link set sync0 up
e n1 sysctl -qw net.netfilter.nf_conntrack_max=262144 2>/dev/null
conf() { cat > $D/$1.conf <<C
Sync {
  Mode FTFW {
    DisableExternalCache off
    StartupResync on
    ResendQueueSize 131072
  }
  UDP {
    IPv4_address $2
    IPv4_Destination_Address $3
    Port 3781
    Interface sync0
    SndSocketBuffer 1249280
    RcvSocketBuffer 1249280
    Checksum on
  }
}
General {
  Systemd off
  HashSize 32768
  HashLimit 262144
  LogFile $D/$1.log
  Syslog off
  LockFile $D/$1.lock
  UNIX { Path $D/$1.ctl }
  NetlinkBufferSize 2097152
  NetlinkBufferSizeMaxGrowth 8388608
  NetlinkOverrunResync on
  NetlinkEventsReliable on
  Filter From Userspace {
    Protocol Accept { TCP UDP }
    Address Accept { IPv4_address 10.244.0.0/24 IPv4_address 10.244.2.0/23 }
  }
}
C
}
conf n1 198.51.100.1 198.51.100.2; conf n2 198.51.100.2 198.51.100.1
for n in n1 n2; do e $n conntrackd -C $D/$n.conf -d; done; sleep 1
for n in n1 n2; do pgrep -f "conntrackd -C $D/$n.conf" | head -1 > $D/$n.pid; done
cpu() { awk '{print $14+$15}' /proc/$(cat $D/$1.pid)/stat; }
bytes() { e $1 conntrackd -C $D/$1.conf -s | awk '/Bytes sent/{print $1, $4}'; }
c1=$(cpu n1); c2=$(cpu n2); b1="$(bytes n1)"
T0=$(date +%s%N)
# Insert N NATed entries with one process per 500 via a batch of background jobs.
python3 - "$N" > $D/cmds.txt <<'PY'
import sys
n=int(sys.argv[1])
for i in range(n):
    pod=f"10.244.3.{10+i%200}"; sport=20000+i//200
    print(f"-I -p tcp -s {pod} -d 203.0.113.10 --sport {sport} --dport 443 -r 203.0.113.10 -q 192.0.2.50 --reply-port-src 443 --reply-port-dst {1024+i} --state ESTABLISHED -u ASSURED,SEEN_REPLY -t 600 --mark 5")
PY
e n1 sh -c "while read -r l; do conntrack \$l 2>/dev/null; done < $D/cmds.txt" &
P=$!
wait $P
T1=$(date +%s%N)
sleep 3
echo "inserted $(e n1 conntrack -C) entries on the holder in $(( (T1-T0)/1000000 )) ms"
echo "holder conntrackd CPU $(( $(cpu n1) - c1 )) ticks, peer conntrackd CPU $(( $(cpu n2) - c2 )) ticks (100 ticks = 1 s)"
echo "holder sync sent (bytes pkts) before: $b1, after: $(bytes n1)"
echo "peer external cache: $(e n2 conntrackd -C $D/n2.conf -e | wc -l) entries"
e n2 conntrackd -C $D/n2.conf -c
echo "peer kernel after commit: $(e n2 conntrack -C) entries; $(grep 'commit has taken' $D/n2.log | tail -1)"
e n2 conntrack -L 2>/dev/null | head -1
