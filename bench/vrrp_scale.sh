#!/bin/bash
# VRRP advert cost at scale (issue 17): V (default 250) VIPs on N (default 3) nodes, keepalived
# rendered as the agent renders it (one VRRPv3 instance per VIP, unicast to every node, priorities
# spread so each node holds about V/N), advert interval A (default 0.1 s). Measures for S (default
# 10) seconds: adverts per second on the LAN (a veth per node on one bridge) and the CPU of each
# node's keepalived (parent + VRRP child). Root; its namespaces kvs<pid>-*, removed on exit.
# Usage: A=0.02 V=250 bench/vrrp_scale.sh
set -u
R=kvs$$; D=$(mktemp -d)
V=${V:-250}; N=${N:-3}; A=${A:-0.1}; S=${S:-10}
cleanup() {
  for i in $(seq 1 $N); do [ -f $D/n$i.pid ] && kill $(cat $D/n$i.pid) 2>/dev/null; done
  sleep 0.5; for i in $(seq 1 $N); do ip netns del $R-n$i 2>/dev/null; done
  ip netns del $R-lan 2>/dev/null; rm -rf "$D"
}
trap cleanup EXIT INT TERM
e() { ip netns exec $R-$1 "${@:2}"; }
ip netns add $R-lan; e lan ip link add br0 type bridge; e lan ip link set br0 up
peers=""
for i in $(seq 1 $N); do peers="$peers 198.51.100.$i"; done
for i in $(seq 1 $N); do
  ip netns add $R-n$i; e n$i ip link set lo up
  ip link add eth0 netns $R-n$i type veth peer name p$i netns $R-lan
  e lan ip link set p$i master br0; e lan ip link set p$i up
  e n$i ip addr add 198.51.100.$i/24 dev eth0; e n$i ip link set eth0 up
  {
    echo "global_defs {"; echo "  router_id n$i"; echo "  vrrp_version 3"
    echo "  max_auto_priority -1"; echo "}"
    for v in $(seq 1 $V); do
      # Priorities rotate so that node (v mod N) + 1 ranks first, as the hash spreads them.
      p=$(( ( (v + i) % N ) * 50 + 50 ))
      echo "vrrp_instance vi_$v {"; echo "  state BACKUP"; echo "  interface eth0"
      echo "  virtual_router_id $(( (v - 1) % 255 + 1 ))"; echo "  priority $p"
      echo "  advert_int $A"; echo "  unicast_peer {"; for ip in $peers; do echo "    $ip"; done
      echo "  }"; echo "  virtual_ipaddress {"
      echo "    203.0.113.$(( v % 250 + 1 ))/32 dev eth0"; echo "  }"; echo "}"
    done
  } > $D/n$i.conf
done
# More than 255 VIPs would reuse router ids on one LAN: refuse.
[ "$V" -le 255 ] || { echo "V must be at most 255 (one router id each)"; exit 1; }
for i in $(seq 1 $N); do
  e n$i keepalived -n -l -P -f $D/n$i.conf -p $D/n$i.pid -r $D/n$i.vrrp.pid > $D/n$i.log 2>&1 &
done
sleep 6   # every instance past its master-down interval: one master per VIP
# The CPU of a node's keepalived processes (parent and VRRP child), taken at the start: both
# samples read the same processes, so a process started later cannot bring its earlier CPU in.
pids() { pgrep -f "keepalived -n -l -P -f $D/n$1.conf" | paste -sd' '; }
cpu() { local t=0; for p in $2; do t=$(( t + $(awk '{print $14+$15}' /proc/$p/stat) )); done; echo $t; }
rxp() { local t=0; for i in $(seq 1 $N); do t=$(( t + $(e lan cat /sys/class/net/p$i/statistics/rx_packets) )); done; echo $t; }
declare -A c0 ps; for i in $(seq 1 $N); do ps[$i]=$(pids $i); c0[$i]=$(cpu $i "${ps[$i]}"); done
p0=$(rxp); sleep $S; p1=$(rxp)
hz=$(getconf CLK_TCK)
masters=$(for i in $(seq 1 $N); do e n$i ip -4 addr show dev eth0 | grep -c "203.0.113"; done | paste -sd/)
echo "advert ${A}s, $V VIPs, $N nodes, ${S}s: $(( (p1 - p0) / S )) VRRP packets/s sent on the LAN; VIPs held per node $masters"
for i in $(seq 1 $N); do
  c=$(( $(cpu $i "${ps[$i]}") - ${c0[$i]} ))
  echo "  n$i keepalived (pids ${ps[$i]}) CPU: $(awk -v c=$c -v hz=$hz -v s=$S 'BEGIN{printf "%.1f%% of a core (%.2f s in %d s)", 100*c/hz/s, c/hz, s}')"
done
echo "  load average: $(cut -d' ' -f1-3 /proc/loadavg)"
