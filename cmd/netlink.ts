/**
 * One request and its reply over a NETLINK_NETFILTER socket of this network
 * namespace, through libc (Deno's FFI): what `nft` and `conntrack` do over
 * netlink, without starting a process (about 0.1 ms, where a process costs
 * 5-10 ms and more on a busy node). Without FFI (no --allow-ffi, no libc) or
 * on a socket error the answer is undefined and the caller runs the tool.
 */

const AF_NETLINK = 16;
const SOCK_RAW = 3;
const SOCK_CLOEXEC = 0o2000000;
const NETLINK_NETFILTER = 12;

type Libc = Deno.DynamicLibrary<{
  socket: { parameters: ["i32", "i32", "i32"]; result: "i32" };
  send: { parameters: ["i32", "buffer", "usize", "i32"]; result: "isize" };
  recv: { parameters: ["i32", "buffer", "usize", "i32"]; result: "isize" };
  close: { parameters: ["i32"]; result: "i32" };
}>;

let libc: Libc | null | undefined;

function openLibc(): Libc | null {
  try {
    if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") return null;
    return Deno.dlopen("libc.so.6", {
      socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
      send: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
      recv: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
      close: { parameters: ["i32"], result: "i32" },
    });
  } catch {
    return null;
  }
}

/**
 * Sends `request` (one netlink message, nlmsghdr first) and returns the first
 * reply message the kernel sends back, or undefined when it could not be asked.
 */
export function netfilterRequest(request: Uint8Array<ArrayBuffer>): Uint8Array | undefined {
  if (libc === undefined) libc = openLibc();
  if (libc === null) return undefined;
  const { socket, send, recv, close } = libc.symbols;
  const fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (fd < 0) return undefined;
  try {
    if (Number(send(fd, request, BigInt(request.length), 0)) !== request.length) return undefined;
    const reply = new Uint8Array(4096);
    const got = Number(recv(fd, reply, BigInt(reply.length), 0));
    return got > 0 ? reply.subarray(0, got) : undefined;
  } finally {
    close(fd);
  }
}
