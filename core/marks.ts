/**
 * Firewall marks: a VIP's mark is its route id shifted to the lowest bit of the
 * configured mask, and is always set and matched under that mask, so other
 * components' mark bits (kube-proxy 0x4000/0x8000, Calico 0xffff0000, Cilium
 * 0x0f00) are never overwritten.
 */

/** The bit position of the mask's lowest set bit. */
export function markShift(mask: number): number {
  return 31 - Math.clz32(mask & -mask);
}

/** The fwmark value that steers traffic to the VIP with this route id. */
export function markFor(routeId: number, mask: number): number {
  return (routeId * 2 ** markShift(mask)) >>> 0;
}

/** The route id a mark encodes under the mask (the inverse of markFor). */
export function routeIdOfMark(mark: number, mask: number): number {
  return Math.floor(((mark & mask) >>> 0) / 2 ** markShift(mask));
}

/** Formats a mark or mask as iptables-save and ip print it: lowercase hex, 0x-prefixed. */
export function hex(value: number): string {
  return `0x${(value >>> 0).toString(16)}`;
}

/**
 * The route id no VIP has (route ids are 1..252): its mark under the mask tags, in the
 * connection mark only, a pod's TCP connection that conntrack picked up from a server's
 * mid-stream segment (see `pickedUpRule`, core/desired.ts). Never a packet mark.
 */
export const PICKED_UP_ID = 255;

/** The connection mark of a connection picked up mid-stream from the server's side. */
export function pickedUpMark(mask: number): number {
  return markFor(PICKED_UP_ID, mask);
}
