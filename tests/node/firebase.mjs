// The Firebase Admin SDK's task queues against opentasks: CLOUD_TASKS_EMULATOR_HOST names its
// HTTP port. Prints what happened as JSON.
import { initializeApp } from 'firebase-admin/app';
import { getFunctions } from 'firebase-admin/functions';

const [project, fn] = process.argv.slice(2);
initializeApp({ projectId: project, serviceAccountId: `tasks@${project}.iam.gserviceaccount.com` });
const queue = getFunctions().taskQueue(fn);
const seen = {};
await queue.enqueue({ hello: 'node' }, { headers: { 'X-From': 'node' } });
await queue.enqueue({ n: 2 }, { id: 'node-fixed', scheduleDelaySeconds: 600, dispatchDeadlineSeconds: 60 });
try {
  await queue.enqueue({ n: 3 }, { id: 'node-fixed' });
  seen.duplicate = 'accepted';
} catch (error) {
  seen.duplicate = error.code;
}
await queue.delete('node-fixed');
await queue.delete('node-fixed'); // the SDK ignores a 404
seen.done = true;
console.log(JSON.stringify(seen));
