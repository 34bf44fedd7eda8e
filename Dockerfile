# The kube-egress node image: the agent (Deno and its cached modules) and the
# tools it drives, on Debian.
#
#   docker build -t kube-egress:0.1.0 .
#
# Both bases are build arguments; the defaults are the published images.
# `deno task image` builds this file unchanged where no registry is reachable,
# from equivalents it makes itself (debootstrap, and Deno from npm). Every
# tool's Debian version is pinned here and recorded in a label; a pin the
# mirror no longer has fails a plain build (apt names the package; `deno task
# image` builds with the mirror's version instead and says which pin to bump).
ARG DENO_VERSION=2.9.6
ARG DENO_IMAGE=denoland/deno:bin-${DENO_VERSION}
ARG DEBIAN_IMAGE=debian:bookworm-slim

# Only the binary (/deno) is taken from here.
FROM ${DENO_IMAGE} AS deno

FROM ${DEBIAN_IMAGE}
ARG DENO_VERSION
ARG IPROUTE2_VERSION=6.1.0-3
ARG IPTABLES_VERSION=1.8.9-2
ARG IPSET_VERSION=7.17-1
ARG NFTABLES_VERSION=1.0.6-2+deb12u2
ARG KEEPALIVED_VERSION=1:2.2.7-1+b2
ARG CONNTRACK_VERSION=1:1.4.7-1+b2
ARG CONNTRACKD_VERSION=1:1.4.7-1+b2
ARG ARPING_VERSION=2.23-1
ARG IPV6TOOLKIT_VERSION=2.0+ds.1-2+b1
ARG TINI_VERSION=0.19.0-1+b3
ARG VERSION=dev
ARG REVISION=unknown
ARG SOURCE=

# Files nothing in the container reads are never unpacked (also on a base that
# is not slim): documentation, manuals, translations, and what keepalived's
# SNMP library drags in: MIBs, PCI ids and Perl's modules (~45 MB; keepalived
# links libperl.so but runs no Perl, and the agent enables no SNMP), and what
# ipv6toolkit depends on for tools other than na6: ieee-data's OUI lists
# (~14 MB, read by scan6 and addr6) and scan6's port names (~1 MB). One
# layer: install, then drop the package lists, caches and logs.
RUN printf 'path-exclude %s\n' '/usr/share/doc/*' '/usr/share/man/*' '/usr/share/info/*' \
      '/usr/share/locale/*' '/usr/share/lintian/*' '/usr/share/snmp/mibs/*' /usr/share/misc/pci.ids \
      '/usr/share/perl/*' '/usr/lib/x86_64-linux-gnu/perl/*' \
      '/usr/share/ieee-data/*' '/usr/share/ipv6toolkit/*' \
      > /etc/dpkg/dpkg.cfg.d/kube-egress \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      iproute2=${IPROUTE2_VERSION} \
      iptables=${IPTABLES_VERSION} \
      ipset=${IPSET_VERSION} \
      nftables=${NFTABLES_VERSION} \
      keepalived=${KEEPALIVED_VERSION} \
      conntrack=${CONNTRACK_VERSION} \
      conntrackd=${CONNTRACKD_VERSION} \
      arping=${ARPING_VERSION} \
      ipv6toolkit=${IPV6TOOLKIT_VERSION} \
      tini=${TINI_VERSION} \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/cache/debconf/*-old \
      /var/lib/dpkg/*-old /var/log/apt /var/log/dpkg.log /var/log/alternatives.log

COPY --from=deno /deno /usr/bin/deno

WORKDIR /app
ENV DENO_DIR=/app/.deno
COPY deno.json deno.lock mod.ts ./
COPY core/ core/
COPY cmd/ cmd/
# Every module the agent loads, fetched now and checked against deno.lock; the
# container runs with --cached-only and never fetches. Behind a proxy that
# re-signs TLS, give the build its CA bundle (used for this step only, never
# stored in the image): docker build --secret id=build-ca,src=<bundle.pem> .
RUN --mount=type=secret,id=build-ca \
    if [ -f /run/secrets/build-ca ]; then export DENO_CERT=/run/secrets/build-ca; fi \
 && deno cache --frozen mod.ts

LABEL org.opencontainers.image.title="kube-egress" \
      org.opencontainers.image.description="Static egress IPs for Kubernetes pods on bare metal: the node agent" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      io.kube-egress.deno.version="${DENO_VERSION}" \
      io.kube-egress.debian.iproute2="${IPROUTE2_VERSION}" \
      io.kube-egress.debian.iptables="${IPTABLES_VERSION}" \
      io.kube-egress.debian.ipset="${IPSET_VERSION}" \
      io.kube-egress.debian.nftables="${NFTABLES_VERSION}" \
      io.kube-egress.debian.keepalived="${KEEPALIVED_VERSION}" \
      io.kube-egress.debian.conntrack="${CONNTRACK_VERSION}" \
      io.kube-egress.debian.conntrackd="${CONNTRACKD_VERSION}" \
      io.kube-egress.debian.arping="${ARPING_VERSION}" \
      io.kube-egress.debian.ipv6toolkit="${IPV6TOOLKIT_VERSION}" \
      io.kube-egress.debian.tini="${TINI_VERSION}"

# Runs as root with NET_ADMIN/NET_RAW granted by the DaemonSet (not privileged).
# tini is PID 1: it forwards SIGTERM to the agent and reaps what is orphaned
# (a keepalived child whose parent was killed).
# Small V8 semi-spaces: the agent's live heap is small, and this keeps V8 from
# holding tens of MiB of young generation. glibc's malloc settings (freed
# memory given back, blocks of 16 KiB and more in mappings of their own) are
# set by the agent itself once it knows it keeps running (cmd/malloc.ts): as
# GLIBC_TUNABLES here they cost every one-shot run ~50-75 ms. See
# `deno task bench agent` / `kube` / `oneshot` and README "Memory".
ENTRYPOINT ["tini", "--", "deno", "run", "--allow-all", "--cached-only", "--v8-flags=--max-semi-space-size=2,--heap-growing-percent=50", "/app/mod.ts"]
CMD ["run", "--source=kubernetes"]
