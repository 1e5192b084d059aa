// /metrics of several workers merged (src/metrics/merge.ts): a worker label
// on every sample, HELP and TYPE once, the samples of a family together.
import t from 'tap';
import { mergeWorkerMetrics } from '../../src/metrics/merge.js';

const w0 = ['# HELP a_total A.', '# TYPE a_total counter', 'a_total{m="x"} 1', 'a_total 2', '# HELP h H.', '# TYPE h histogram', 'h_bucket{le="1"} 3', 'h_sum 4', 'h_count 3', ''].join('\n');
const w1 = ['# HELP a_total A.', '# TYPE a_total counter', 'a_total{m="x"} 5', 'a_total 6', '# HELP h H.', '# TYPE h histogram', 'h_bucket{le="1"} 7', 'h_sum 8', 'h_count 7', '# HELP only1 Only on worker 1.', '# TYPE only1 gauge', 'only1{} 9', ''].join('\n');

t.test('merged exposition', async (t) => {
  const out = mergeWorkerMetrics([w0, w1]);
  t.equal(
    out,
    [
      '# HELP a_total A.',
      '# TYPE a_total counter',
      'a_total{worker="0",m="x"} 1',
      'a_total{worker="0"} 2',
      'a_total{worker="1",m="x"} 5',
      'a_total{worker="1"} 6',
      '# HELP h H.',
      '# TYPE h histogram',
      'h_bucket{worker="0",le="1"} 3',
      'h_sum{worker="0"} 4',
      'h_count{worker="0"} 3',
      'h_bucket{worker="1",le="1"} 7',
      'h_sum{worker="1"} 8',
      'h_count{worker="1"} 7',
      '# HELP only1 Only on worker 1.',
      '# TYPE only1 gauge',
      'only1{worker="1"} 9',
      '',
    ].join('\n'),
  );
});
