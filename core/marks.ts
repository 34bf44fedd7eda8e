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
