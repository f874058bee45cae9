/**
 * Plain-text rendering helpers for the CLI: byte sizes, aligned tables, JSON.
 */

/** 1536 -> "1.5 KiB"; exact bytes below 1 KiB. */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = -1;
  do {
    v /= 1024;
    i++;
  } while (v >= 1024 && i < units.length - 1);
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

export interface Column {
  header: string;
  /** Right-align (numbers). Default: left. */
  right?: boolean;
}

/** An aligned text table: a header row, a rule, then the rows. */
export function renderTable(columns: readonly Column[], rows: readonly (readonly string[])[]): string {
  // A loop, not Math.max(...rows): spreading 200k arguments overflows the stack.
  const widths = columns.map((c, i) => rows.reduce((w, r) => Math.max(w, (r[i] ?? '').length), c.header.length));
  const line = (cells: readonly string[]): string =>
    columns
      .map((c, i) => {
        const cell = cells[i] ?? '';
        return c.right ? cell.padStart(widths[i]) : cell.padEnd(widths[i]);
      })
      .join('  ')
      .trimEnd();
  return [line(columns.map((c) => c.header)), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

/** `[2, 3]` -> "[2, 3]"; a scalar is "[]". */
export function formatShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/** Stable, pretty JSON for --json output. */
export function toJson(value: unknown): string {
  return JSON.stringify(value, null, 2);
}
