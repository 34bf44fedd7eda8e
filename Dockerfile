# The kube-egress node image: Deno plus the tools the agent drives.
#   docker build -t kube-egress:latest .
# Small and reviewed on purpose: one apt layer, the sources, a warmed module
# cache (the container never fetches at run time: --cached-only).
ARG DENO_VERSION=2.9.6
FROM denoland/deno:debian-${DENO_VERSION}

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      iproute2 iptables ipset nftables keepalived arping conntrack \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
ENV DENO_DIR=/app/.deno
COPY deno.json deno.lock mod.ts ./
COPY core/ core/
COPY cmd/ cmd/
RUN deno cache --frozen mod.ts

# Runs as root with NET_ADMIN/NET_RAW granted by the DaemonSet (not privileged).
# Small V8 semi-spaces: the agent's live heap is small, and this keeps V8 from
# holding tens of MiB of young generation; and glibc gives freed memory back
# instead of keeping it (~30 MiB after the first list of 10,000 pods). See
# `deno task bench agent` / `kube` and README "Memory".
ENV GLIBC_TUNABLES=glibc.malloc.trim_threshold=65536
ENTRYPOINT ["deno", "run", "--allow-all", "--cached-only", "--v8-flags=--max-semi-space-size=2,--heap-growing-percent=50", "mod.ts"]
CMD ["run", "--source=kubernetes"]
