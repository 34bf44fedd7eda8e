/**
 * The nf_tables ruleset generation of this network namespace: a counter the
 * kernel bumps on every committed nftables transaction, whoever commits it
 * (`nft`, iptables-nft, kube-proxy). Reading it is one netlink round trip
 * (NFT_MSG_GETGEN, what `nft` itself asks before every command), about
 * 0.1 ms, where listing our table with 10,000 elements takes `nft` 35-50 ms.
 * The same generation as after our own last transaction proves that nobody
 * changed anything since, so our copy of our table is exact (see
 * `ReadOptions.provenNft` in cmd/system.ts). No `nft` command prints it, so
 * it is asked over netlink through libc (Deno's FFI); without FFI (no
 * --allow-ffi, no libc) it reads as undefined and every pass lists the table.
 */
import { netfilterRequest } from "./netlink.ts";

/** The generation now, or undefined when it cannot be read. */
export type NftGeneration = () => number | undefined;

const NFNL_SUBSYS_NFTABLES = 10;
const NFT_MSG_NEWGEN = 15;
const NFT_MSG_GETGEN = 16;
const NLM_F_REQUEST = 1;
const NFTA_GEN_ID = 1;

/** The NFTA_GEN_ID of a NEWGEN reply, or undefined for anything else (an error reply). */
export function parseGenReply(reply: Uint8Array): number | undefined {
  if (reply.length < 20) return undefined;
  const view = new DataView(reply.buffer, reply.byteOffset, reply.byteLength);
  const length = Math.min(view.getUint32(0, true), reply.length);
  if (view.getUint16(4, true) !== ((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN)) return undefined;
  // nlmsghdr (16 bytes), nfgenmsg (4), then attributes: u16 length, u16 type, payload.
  for (let at = 20; at + 4 <= length;) {
    const size = view.getUint16(at, true);
    if (size < 4) return undefined;
    if ((view.getUint16(at + 2, true) & 0x3fff) === NFTA_GEN_ID && size >= 8) {
      return view.getUint32(at + 4, false);
    }
    at += (size + 3) & ~3;
  }
  return undefined;
}

/** The kernel's generation, asked over netlink. */
export const kernelNftGeneration: NftGeneration = () => {
  const request = new Uint8Array(20);
  const view = new DataView(request.buffer);
  view.setUint32(0, request.length, true);
  view.setUint16(4, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN, true);
  view.setUint16(6, NLM_F_REQUEST, true);
  view.setUint32(8, 1, true);
  const reply = netfilterRequest(request);
  return reply ? parseGenReply(reply) : undefined;
};

/** For hosts without nf_tables of their own (a fake kernel): never known. */
export const noNftGeneration: NftGeneration = () => undefined;
