// Drives opentasks with the official Node client, over gRPC (insecure) or the REST fallback.
// Usage: node client.mjs grpc|rest PORT PARENT [QUEUE_SUFFIX]
// Prints one JSON line with what it saw; exits non-zero on any unexpected error.
import { CloudTasksClient } from '@google-cloud/tasks';
import { grpc } from 'google-gax';
import { OAuth2Client } from 'google-auth-library';

const [transport, port, parent, suffix] = process.argv.slice(2);

function client() {
  if (transport === 'grpc') {
    return new CloudTasksClient({
      servicePath: '127.0.0.1', port: Number(port), sslCreds: grpc.credentials.createInsecure(), projectId: 'p',
    });
  }
  const auth = new OAuth2Client();
  auth.setCredentials({ access_token: 'opentasks' });
  return new CloudTasksClient({
    fallback: 'rest', protocol: 'http', apiEndpoint: '127.0.0.1', port: Number(port), authClient: auth, projectId: 'p',
  });
}

const tasks = client();
const queueName = `${parent}/queues/node-${suffix ?? transport}`;
const [queue] = await tasks.createQueue({
  parent, queue: { name: queueName, rateLimits: { maxDispatchesPerSecond: 5 } },
});
await tasks.pauseQueue({ name: queueName });
const [task] = await tasks.createTask({
  parent: queueName,
  task: {
    httpRequest: {
      url: 'https://example.com/handler', httpMethod: 'POST', body: Buffer.from('{"hello":"node"}'),
      headers: { 'Content-Type': 'application/json' },
    },
  },
  responseView: 'FULL',
});
const [listed] = await tasks.listTasks({ parent: queueName });
let missing = null;
try {
  await tasks.getQueue({ name: `${parent}/queues/does-not-exist` });
} catch (error) {
  missing = { code: error.code, message: error.details ?? error.message };
}
await tasks.deleteTask({ name: task.name });
const [afterDelete] = await tasks.listTasks({ parent: queueName });
await tasks.deleteQueue({ name: queueName });
await tasks.close();

console.log(JSON.stringify({
  queue: { name: queue.name, burst: queue.rateLimits.maxBurstSize, rate: queue.rateLimits.maxDispatchesPerSecond },
  task: { name: task.name, body: Buffer.from(task.httpRequest.body).toString(), method: task.httpRequest.httpMethod },
  listed: listed.map((t) => t.name),
  afterDelete: afterDelete.length,
  missing,
}));
