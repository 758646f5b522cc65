// Shape rules, identical to ONNX's: multidirectional (numpy) broadcasting, axis normalization.

export function fmt(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}

/** numpy/ONNX multidirectional broadcast of several shapes, or an error naming the op. */
export function broadcastShapes(op: string, ...shapes: (readonly number[])[]): number[] {
  const rank = Math.max(...shapes.map((s) => s.length));
  const out: number[] = new Array(rank).fill(1);
  for (let i = 0; i < rank; i++) {
    for (const s of shapes) {
      const d = s[s.length - rank + i];
      if (d === undefined) continue;
      const cur = out[i]!;
      if (d === cur || d === 1) continue;
      if (cur === 1) out[i] = d;
      else throw new Error(`${op}: shapes ${shapes.map(fmt).join(" and ")} cannot be broadcast (dimension ${i - rank} is ${cur} vs ${d})`);
    }
  }
  return out;
}

export function normAxis(op: string, axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(a) || a < 0 || a >= rank) throw new Error(`${op}: axis ${axis} is out of range for rank ${rank}`);
  return a;
}

export function product(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}
