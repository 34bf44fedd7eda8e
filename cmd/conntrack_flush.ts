/**
 * A VIP role's connections flushed by the kernel itself: one ctnetlink
 * IPCTNL_MSG_CT_DELETE without a tuple, with a family and a mark under a mask,
 * is a flush the kernel filters as it walks its table (what `conntrack -D -f
 * ipv4 --mark 0x5/0xff` asks for, in one message, where the tool dumps the
 * matching entries and deletes them one by one). On the takeover's critical
 * path: the new holder's own pods' flows resume when their forwarding entries
 * are gone, and a `conntrack` process takes 10-60 ms on a busy node.
 *
 * Only flushes by mark alone: the kernel cannot filter by a source range.
 * The family filter on flush needs Linux 4.19 (and nfgenmsg version 1); on an
 * older kernel, without FFI, or on any error the caller runs `conntrack`.
 */
import type { ConntrackFlush } from "../core/operation.ts";
import { netfilterRequest } from "./netlink.ts";

/** Runs `flush` in the kernel: true when done there, false when `conntrack -D` must run it. */
export type KernelFlush = (flush: ConntrackFlush) => boolean;

const NFNL_SUBSYS_CTNETLINK = 1;
const IPCTNL_MSG_CT_DELETE = 2;
const NLM_F_REQUEST = 1;
const NLM_F_ACK = 4;
const NLMSG_ERROR = 2;
const CTA_MARK = 8;
const CTA_MARK_MASK = 21;
const AF_INET = 2;
const AF_INET6 = 10;

/** Whether the kernel can run `flush`: by mark alone, on Linux 4.19 or later. */
export function kernelCanFlush(
  flush: ConntrackFlush,
  release: string,
): flush is Extract<ConntrackFlush, { why: "role" }> {
  if (flush.why !== "role" || flush.source !== undefined) return false;
  const [major, minor] = release.split(/[.-]/).map(Number);
  return major > 4 || (major === 4 && minor >= 19);
}

/** The netlink message: nlmsghdr, nfgenmsg (family, version 1: filter by it), mark, mask. */
export function flushRequest(
  flush: Extract<ConntrackFlush, { why: "role" }>,
  seq: number,
): Uint8Array<ArrayBuffer> {
  const request = new Uint8Array(36);
  const view = new DataView(request.buffer);
  view.setUint32(0, request.length, true);
  view.setUint16(4, (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE, true);
  view.setUint16(6, NLM_F_REQUEST | NLM_F_ACK, true);
  view.setUint32(8, seq, true);
  request[16] = flush.family === "ipv6" ? AF_INET6 : AF_INET;
  request[17] = 1;
  // Attributes: u16 length, u16 type, then the value in network byte order.
  view.setUint16(20, 8, true);
  view.setUint16(22, CTA_MARK, true);
  view.setUint32(24, flush.mark >>> 0, false);
  view.setUint16(28, 8, true);
  view.setUint16(30, CTA_MARK_MASK, true);
  view.setUint32(32, flush.mask >>> 0, false);
  return request;
}

/** The errno of an acknowledgement (0: done), undefined when `reply` is not one for `seq`. */
export function ackErrno(reply: Uint8Array, seq: number): number | undefined {
  if (reply.length < 20) return undefined;
  const view = new DataView(reply.buffer, reply.byteOffset, reply.byteLength);
  if (view.getUint16(4, true) !== NLMSG_ERROR || view.getUint32(8, true) !== seq) return undefined;
  const error = view.getInt32(16, true);
  return error === 0 ? 0 : -error;
}

let seq = 0;

/** The kernel's release; "" where the process may not ask (no --allow-sys): no kernel flush. */
function osRelease(): string {
  try {
    return Deno.osRelease();
  } catch {
    return "";
  }
}

/** The kernel of this network namespace, over netlink (cmd/netlink.ts). */
export const kernelConntrackFlush: KernelFlush = (flush) => {
  if (!kernelCanFlush(flush, osRelease())) return false;
  seq = (seq + 1) >>> 0;
  const reply = netfilterRequest(flushRequest(flush, seq));
  return reply !== undefined && ackErrno(reply, seq) === 0;
};

/** For hosts whose kernel is not this process's (a fake kernel): every flush is a process. */
export const noKernelFlush: KernelFlush = () => false;
