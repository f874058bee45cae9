/**
 * Filename templates (lib/manager/filename-template.ts) and metric names (lib/manager/metric-names.ts): Python's str.format output, obtained by
 * running python3, for the Keras filename cases and a randomized differential run; alias resolution; coded errors.
 */
import { spawnSync } from 'node:child_process';
import { CheckpointError, ErrorCode } from '../../lib/errors';
import { formatValue, renderFilename, validateTemplate, TemplateValue } from '../../lib/manager/filename-template';
import {
  inferMonitorMode,
  isMaximizedMetric,
  lookupMetric,
  metricAliases,
  resolveMonitorMode,
} from '../../lib/manager/metric-names';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(CheckpointError);
    return (e as CheckpointError).code;
  }
  return undefined;
}

function messageOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(CheckpointError);
    expect((e as CheckpointError).code).toBe(ErrorCode.TEMPLATE);
    return (e as Error).message;
  }
  throw new Error('expected a throw');
}

// Expected strings were produced by python3 3.11: template.format(**values), `epoch`/`batch` as int, others float.
const PYTHON_TABLE: [string, Record<string, TemplateValue>, string][] = [
  [
    'xception_v1_{epoch:02d}_{val_accuracy:.3f}.safetensors',
    { epoch: 3, val_accuracy: 0.81 },
    'xception_v1_03_0.810.safetensors',
  ],
  [
    'xception_v1_{epoch:02d}_{val_accuracy:.3f}.safetensors',
    { epoch: 7, val_accuracy: 0.895 },
    'xception_v1_07_0.895.safetensors',
  ],
  ['m_{epoch:02d}_{val_accuracy:.3f}', { epoch: 1, val_accuracy: 0.72 }, 'm_01_0.720'],
  ['w{epoch}-{loss}', { epoch: 12, loss: 1.0 }, 'w12-1.0'],
  ['w{epoch}-{loss}', { epoch: 12, loss: 0.1 + 0.2 }, 'w12-0.30000000000000004'],
  ['w{loss}', { loss: 1e-5 }, 'w1e-05'],
  ['w{loss}', { loss: 1e16 }, 'w1e+16'],
  ['{loss:.3g}', { loss: 0.000123456 }, '0.000123'],
  ['{loss:.3g}', { loss: 123456.0 }, '1.23e+05'],
  ['{loss:+.2e}', { loss: 123.456 }, '+1.23e+02'],
  ['{loss:+.2e}', { loss: -1.5e-300 }, '-1.50e-300'],
  ['{loss:>8.2f}', { loss: 3.14159 }, '    3.14'],
  ['{loss:*<8.2f}', { loss: 3.14159 }, '3.14****'],
  ['{loss:^9.1f}', { loss: -2.25 }, '  -2.2   '],
  ['{epoch:,d}', { epoch: 1234567 }, '1,234,567'],
  ['{epoch:09,d}', { epoch: 1234 }, '0,001,234'],
  ['{epoch:_d}', { epoch: 1234567 }, '1_234_567'],
  ['{epoch:#x}', { epoch: 255 }, '0xff'],
  ['{loss:.2f}', { loss: 0.125 }, '0.12'],
  ['{loss:.2f}', { loss: 0.375 }, '0.38'],
  ['{loss:.2f}', { loss: 2.675 }, '2.67'],
  ['{loss:.0f}', { loss: 0.5 }, '0'],
  ['{loss:.0f}', { loss: 1.5 }, '2'],
  ['{loss:.0f}', { loss: 2.5 }, '2'],
  ['{loss:.1f}', { loss: 0.25 }, '0.2'],
  ['{loss:.3f}', { loss: 1.0005 }, '1.000'],
  ['{loss:.2f}', { loss: -0.001 }, '-0.00'],
  ['{loss:z.2f}', { loss: -0.001 }, '0.00'],
  ['{acc:.1%}', { acc: 0.8954 }, '89.5%'],
  ['{acc:%}', { acc: 0.5 }, '50.000000%'],
  ['{loss:e}', { loss: 5e-324 }, '4.940656e-324'],
  ['{loss:.3}', { loss: 100.0 }, '1e+02'],
  ['{loss:.3}', { loss: 1.0 }, '1.0'],
  ['{loss:g}', { loss: 1e-5 }, '1e-05'],
  ['{loss:#g}', { loss: 1.0 }, '1.00000'],
  ['{loss:G}', { loss: 1e-20 }, '1E-20'],
  ['{loss:n}', { loss: 1234.5 }, '1234.5'],
  ['{loss:,.2f}', { loss: 12345678.9 }, '12,345,678.90'],
  ['{loss:012,.2f}', { loss: 1234.5678 }, '0,001,234.57'],
  ['{loss:08.2f}', { loss: Infinity }, '00000inf'],
  ['{loss:.3f}', { loss: NaN }, 'nan'],
  ['{loss:F}', { loss: -Infinity }, '-INF'],
  ['{epoch:03d}_{batch:05d}', { epoch: 2, batch: 40 }, '002_00040'],
  ['{{literal}}_{epoch}', { epoch: 4 }, '{literal}_4'],
  ['a}}b{{c', {}, 'a}b{c'],
  ['{name}_{name:>6}_{name:.2}', { name: 'run' }, 'run_   run_ru'],
  ['{epoch:.2f}', { epoch: 3 }, '3.00'],
  ['{epoch:e}', { epoch: 3 }, '3.000000e+00'],
];

describe('renderFilename matches Python str.format', () => {
  test.each(PYTHON_TABLE)('%s with %j renders as Python does: %s', (template, values, expected) => {
    expect(renderFilename(template, values)).toBe(expected);
  });

  test('a bigint is a Python int, a number under intKeys an int, other numbers floats', () => {
    expect(renderFilename('{step:,d}', { step: 12345678901234567890n })).toBe('12,345,678,901,234,567,890');
    expect(renderFilename('{step:03d}', { step: 7 }, { intKeys: ['step'] })).toBe('007');
    expect(renderFilename('{step}', { step: 7 }, { intKeys: ['step'] })).toBe('7');
    expect(renderFilename('{step}', { step: 7 })).toBe('7.0');
    // A non-integer under an int key is a float, as the value really is.
    expect(renderFilename('{epoch}', { epoch: 2.5 })).toBe('2.5');
  });
});

describe('formatValue agrees with python3 format() on a randomized differential run', () => {
  // A deterministic pseudo-random set of doubles (ties such as k/8 and k/1024 included, where JavaScript's toFixed
  // rounds differently from Python), ints and strings, crossed with many specs; python3 computes the expectations.
  let seed = 20260601;
  const rnd = (): number => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed / 2147483648;
  };
  const floats: number[] = [
    0,
    -0,
    0.125,
    2.675,
    0.5,
    1.5,
    2.5,
    -2.5,
    1e16,
    1e15,
    1e-5,
    1e-4,
    5e-324,
    1.7976931348623157e308,
    NaN,
    Infinity,
    -Infinity,
    0.72,
    0.895,
    0.81,
    0.005,
    0.015,
    1.005,
    9.9999995,
    99.5,
    999999.5,
    0.0009765625,
    123456789.125,
    1e21,
    1e22,
    1e-7,
    123.456,
    1234.5678,
  ];
  for (let i = 0; i < 150; i++) floats.push((rnd() < 0.3 ? -1 : 1) * rnd() * 10 ** (Math.floor(rnd() * 40) - 20));
  for (let i = 0; i < 60; i++) floats.push(Math.floor(rnd() * 2000 - 1000) / 8);
  for (let i = 0; i < 40; i++) floats.push(Math.floor(rnd() * 100000) / 1024);
  const floatSpecs = [
    '',
    '.0',
    '.1',
    '.3',
    '.12',
    'f',
    '.0f',
    '.1f',
    '.2f',
    '.3f',
    '.5f',
    '.20f',
    'e',
    '.0e',
    '.2e',
    '+.2e',
    '#.0e',
    'E',
    'g',
    '.0g',
    '.1g',
    '.3g',
    '.10g',
    '#g',
    '#.3g',
    'G',
    'n',
    '.3n',
    '%',
    '.1%',
    '.0%',
    '>12.3f',
    '<12.3f',
    '^12.3f',
    '*^13.2e',
    '012.3f',
    '+012.3f',
    ' .2f',
    '0=12,.2f',
    '012,.2f',
    ',.2f',
    '_.3f',
    ',g',
    ',',
    '010',
    'z.2f',
    'z',
    '#.0f',
    '#',
    '08.2f',
    '-10.4',
    'x<10',
    '.30e',
    '.17g',
    ',e',
    'd',
    's',
    'q',
    ',n',
    '.',
    '5.2ff',
  ];
  const ints = [0, 1, 5, 7, 10, 42, 99, 100, 255, 1234, 65535, 1234567, -1, -1234, 2 ** 40, -(2 ** 31)];
  const intSpecs = [
    '',
    'd',
    '02d',
    '03d',
    '05d',
    '+d',
    ' d',
    ',d',
    '_d',
    '09,d',
    '08,d',
    '0=10,d',
    '<010d',
    '^010d',
    '>6d',
    'x<10,d',
    'x',
    '#x',
    '#010x',
    'X',
    '#X',
    '_x',
    '_b',
    'b',
    '#o',
    'o',
    'n',
    '.2f',
    'e',
    'g',
    '%',
    '.1%',
    'f',
    '.2d',
    's',
    ',x',
    'z',
    ',_d',
  ];
  const strings = ['ab', 'run-1', 'é', ''];
  const stringSpecs = ['', 's', '>5', '<5', '^6', '05', '.1', '*^7.3', '+', '=5', '#', ',', 'd'];
  type Case = { kind: 'float' | 'int' | 'str'; value: number | string; spec: string };
  const cases: Case[] = [];
  for (const value of floats) for (const spec of floatSpecs) cases.push({ kind: 'float', value, spec });
  for (const value of ints) for (const spec of intSpecs) cases.push({ kind: 'int', value, spec });
  for (const value of strings) for (const spec of stringSpecs) cases.push({ kind: 'str', value, spec });

  let expected: (string | null)[] = [];
  beforeAll(() => {
    const script = [
      'import json, sys',
      'out = []',
      'for c in json.load(sys.stdin):',
      '    v = c["value"]',
      '    v = float(v) if c["kind"] == "float" else int(v) if c["kind"] == "int" else v',
      '    try:',
      '        out.append(format(v, c["spec"]))',
      '    except (ValueError, TypeError):',
      '        out.append(None)',
      'json.dump(out, sys.stdout)',
    ].join('\n');
    // Floats travel as their shortest repr strings, which Python reads back to the same double.
    const input = cases.map((c) => ({
      ...c,
      value: typeof c.value === 'number' && Object.is(c.value, -0) ? '-0' : String(c.value),
    }));
    const r = spawnSync('python3', ['-c', script], { input: JSON.stringify(input), maxBuffer: 1 << 28 });
    if (r.status !== 0) throw new Error(`python3 failed: ${r.error ?? r.stderr.toString()}`);
    expected = JSON.parse(r.stdout.toString());
  });

  test(`every case gives Python's string, or an error where Python raises`, () => {
    expect(expected).toHaveLength(cases.length);
    const mismatches: string[] = [];
    let errors = 0;
    cases.forEach((c, i) => {
      let got: string | null;
      try {
        got = formatValue(c.value, c.spec, c.kind === 'int');
      } catch (e) {
        expect((e as CheckpointError).code).toBe(ErrorCode.TEMPLATE);
        got = null;
      }
      if (got === null) errors++;
      if (got !== expected[i]) {
        mismatches.push(`${c.kind} ${String(c.value)} ${JSON.stringify(c.spec)}: ${got} vs Python ${expected[i]}`);
      }
    });
    expect(mismatches.slice(0, 20)).toEqual([]);
    // Both successes and errors were exercised.
    expect(errors).toBeGreaterThan(100);
    expect(cases.length - errors).toBeGreaterThan(10000);
  });
});

describe('aliases', () => {
  test('{val_accuracy} reads val_acc and {acc} reads accuracy; an exact key wins over its alias', () => {
    const t = 'x_{epoch:02d}_{val_accuracy:.3f}_{acc:.2f}';
    expect(renderFilename(t, { epoch: 3, val_acc: 0.81, accuracy: 0.9 })).toBe('x_03_0.810_0.90');
    expect(renderFilename('{val_acc:.1f}', { val_acc: 0.5, val_accuracy: 0.7 })).toBe('0.5');
    expect(renderFilename('{out_accuracy:.1f}', { out_acc: 0.25 })).toBe('0.2');
  });

  test('metricAliases pairs X_accuracy with X_acc only', () => {
    expect(metricAliases('val_accuracy')).toEqual(['val_acc']);
    expect(metricAliases('acc')).toEqual(['accuracy']);
    expect(metricAliases('val_dense_1_acc')).toEqual(['val_dense_1_accuracy']);
    expect(metricAliases('val_loss')).toEqual([]);
    expect(metricAliases('binaccuracy')).toEqual([]);
  });

  test('lookupMetric is alias-aware and ignores non-numbers', () => {
    expect(lookupMetric({ val_acc: 0.7 }, 'val_accuracy')).toBe(0.7);
    expect(lookupMetric({ accuracy: 0.6 }, 'acc')).toBe(0.6);
    expect(lookupMetric({ val_acc: 0.7 }, 'val_loss')).toBeUndefined();
    expect(lookupMetric({ val_loss: 'x' as unknown as number }, 'val_loss')).toBeUndefined();
    expect(lookupMetric(undefined, 'val_loss')).toBeUndefined();
    expect(Number.isNaN(lookupMetric({ loss: NaN }, 'loss'))).toBe(true);
  });
});

describe('monitor mode', () => {
  test.each([
    ['val_loss', 'min'],
    ['loss', 'min'],
    ['mse', 'min'],
    ['val_mean_absolute_error', 'min'],
    ['acc', 'max'],
    ['val_acc', 'max'],
    ['val_accuracy', 'max'],
    ['val_categorical_accuracy', 'max'],
    ['top_k_categorical_accuracy', 'max'],
    ['binaryAccuracy', 'max'],
    ['val_auc_1', 'max'],
    ['precision', 'max'],
    ['val_recall', 'max'],
    ['f1_score', 'max'],
    ['val_f1', 'max'],
    ['dense_1_acc', 'max'],
    ['accuracy_loss', 'min'],
    ['val_rmse', 'min'],
    ['categoricalCrossentropy', 'min'],
    ['cosineProximity', 'min'],
    ['val_iou', 'max'],
    ['r2_score', 'max'],
    ['cosine_similarity', 'max'],
    ['val_sensitivity_at_specificity', 'max'],
  ])('auto mode for %s is %s', (monitor, mode) => {
    expect(resolveMonitorMode(monitor, 'auto')).toBe(mode);
    expect(isMaximizedMetric(monitor)).toBe(mode === 'max');
  });

  test.each(['val_cacc', 'score', 'false_positives', 'kl_divergence', 'poisson'])(
    'auto mode for %s, whose direction the name does not tell, is a coded error saying to pass mode (as Keras 3 raises)',
    (monitor) => {
      expect(inferMonitorMode(monitor)).toBeNull();
      expect(codeOf(() => resolveMonitorMode(monitor, 'auto'))).toBe(ErrorCode.INVALID_ARGUMENT);
      expect(() => resolveMonitorMode(monitor, 'auto')).toThrow(/pass mode: 'max'.*mode: 'min'/);
      expect(resolveMonitorMode(monitor, 'max')).toBe('max');
    },
  );

  test('explicit min and max win over the name; an unknown mode warns and falls back to auto, as Keras does', () => {
    expect(resolveMonitorMode('val_acc', 'min')).toBe('min');
    expect(resolveMonitorMode('val_loss', 'max')).toBe('max');
    expect(resolveMonitorMode('val_loss')).toBe('min');
    const warnings: string[] = [];
    expect(resolveMonitorMode('val_acc', 'maximize', (m) => warnings.push(m), 'ModelCheckpoint')).toBe('max');
    expect(resolveMonitorMode('val_loss', null, (m) => warnings.push(m))).toBe('min');
    expect(warnings).toHaveLength(2);
    expect(warnings[0]).toMatch(/ModelCheckpoint mode "maximize" is unknown .* falling back to 'auto'/);
  });
});

describe('template errors', () => {
  test('an unknown key names it, its alias, and the keys available', () => {
    const msg = messageOf(() =>
      renderFilename('m_{epoch:02d}_{val_accuracy:.3f}', { epoch: 1, loss: 0.5, val_loss: 0.6 }),
    );
    expect(msg).toContain('"val_accuracy"');
    expect(msg).toContain('"val_acc"');
    expect(msg).toContain('available keys: epoch, loss, val_loss');
  });

  test.each([
    ['m_{epoch', "'{' at offset 2 is never closed"],
    ['m_}epoch', "single '}' at offset 2"],
    ['m_{}', 'empty field name'],
    ['m_{0}', 'positional field'],
    ['m_{a.b}', 'unsupported character "."'],
    ['m_{a[0]}', 'unsupported character "["'],
    ['m_{a!r}', 'unsupported character "!"'],
    ['m_{a:{w}}', "nested '{' at offset 5"],
    ['m_{a:.}', 'missing precision'],
    ['m_{a:5.2ff}', 'invalid format specifier'],
    ['m_{a:q}', 'unknown format code "q"'],
    ['m_{a:,_d}', "both ',' and '_'"],
    ['m_{a:,s}', `cannot specify "," with "s"`],
    ['m_{a:.5000f}', 'precision 5000 is too large'],
    ['dir/m_{epoch}', 'path separator'],
    ['dir\\m_{epoch}', 'path separator'],
    ['..', 'does not name a file'],
    ['', 'does not name a file'],
  ])('validateTemplate(%j) throws TEMPLATE saying %s', (template, what) => {
    const msg = messageOf(() => validateTemplate(template));
    expect(msg).toContain(what);
    expect(msg).toContain(JSON.stringify(template));
  });

  test('validateTemplate returns the fields with their offsets', () => {
    expect(validateTemplate('a_{epoch:02d}_{{x}}_{val_acc}')).toEqual([
      { key: 'epoch', spec: '02d', start: 2, end: 13 },
      { key: 'val_acc', spec: '', start: 20, end: 29 },
    ]);
    expect(validateTemplate('plain.safetensors')).toEqual([]);
  });

  test('a spec that does not fit the value type is refused, as Python refuses it', () => {
    expect(messageOf(() => renderFilename('{val_loss:d}', { val_loss: 2 }))).toContain(
      `unknown format code "d" for object of type 'float'`,
    );
    expect(messageOf(() => renderFilename('{epoch:.2d}', { epoch: 2 }))).toContain('precision not allowed');
    expect(messageOf(() => renderFilename('{name:d}', { name: 'x' }))).toContain(`type 'str'`);
    expect(messageOf(() => renderFilename('{name:+}', { name: 'x' }))).toContain('sign not allowed');
  });

  test('a value that would leave the directory, or an empty/dot name, is refused', () => {
    expect(messageOf(() => renderFilename('m_{name}', { name: '../evil' }))).toContain('path separator');
    expect(messageOf(() => renderFilename('m_{name}', { name: 'a\\b' }))).toContain('path separator');
    expect(messageOf(() => renderFilename('m_{name}', { name: 'a\0b' }))).toContain('NUL');
    expect(messageOf(() => renderFilename('{name}', { name: '..' }))).toContain('not a file name');
    expect(messageOf(() => renderFilename('{name}', { name: '.' }))).toContain('not a file name');
    expect(messageOf(() => renderFilename('{name}', { name: '' }))).toContain('not a file name');
    // Dots inside a name are fine.
    expect(renderFilename('{name}', { name: 'a..b' })).toBe('a..b');
  });

  test('a value that is not a number, bigint or string is a TEMPLATE error', () => {
    const values = { loss: undefined, acc: null, x: { a: 1 } } as unknown as Record<string, TemplateValue>;
    expect(messageOf(() => renderFilename('{loss:.2f}', values))).toContain('type undefined cannot be formatted');
    expect(messageOf(() => renderFilename('{acc}', values))).toContain('type null cannot be formatted');
    expect(messageOf(() => renderFilename('{x}', values))).toContain('type object cannot be formatted');
  });

  test('a non-string template is a TEMPLATE error', () => {
    expect(codeOf(() => validateTemplate(42 as unknown as string))).toBe(ErrorCode.TEMPLATE);
  });
});
