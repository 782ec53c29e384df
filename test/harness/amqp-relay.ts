import { createServer, connect as tcpConnect, type AddressInfo, type Socket } from 'node:net';

/**
 * A TCP relay in front of a real RabbitMQ that can make the broker go quiet on channels while it
 * still answers on the connection itself (handshake, heartbeats): what a client sees from a node
 * that took the connection but whose queues are still recovering. Fault injection only; the
 * broker behind it is the real one.
 */
export interface AmqpRelay {
  /** amqp://guest:guest@127.0.0.1:<relay port>/ */
  readonly url: string;
  /** Frames from the broker on these channels (or on every channel but 0) are dropped from now on. */
  mute(channels: number[] | 'all-channels'): void;
  unmute(): void;
  /** Channel numbers of the broker frames dropped so far. */
  readonly dropped: number[];
  close(): Promise<void>;
}

const FRAME_END = 0xce;
const FRAME_HEADER = 7;

export async function startAmqpRelay(brokerPort: number): Promise<AmqpRelay> {
  let muted: Set<number> | 'all-channels' | undefined;
  const dropped: number[] = [];
  const sockets = new Set<Socket>();
  const isMuted = (channel: number): boolean => channel !== 0 && muted !== undefined && (muted === 'all-channels' || muted.has(channel));

  const server = createServer((client) => {
    const broker = tcpConnect({ host: '127.0.0.1', port: brokerPort });
    sockets.add(client);
    sockets.add(broker);
    const end = (): void => {
      client.destroy();
      broker.destroy();
      sockets.delete(client);
      sockets.delete(broker);
    };
    client.on('error', end).on('close', end);
    broker.on('error', end).on('close', end);
    client.pipe(broker);
    // Broker to client: whole frames, each forwarded or dropped by its channel number.
    let pending = Buffer.alloc(0);
    broker.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      for (;;) {
        if (pending.length < FRAME_HEADER) return;
        const channel = pending.readUInt16BE(1);
        const total = FRAME_HEADER + pending.readUInt32BE(3) + 1;
        if (pending.length < total) return;
        const frame = pending.subarray(0, total);
        pending = pending.subarray(total);
        if (frame[total - 1] !== FRAME_END) {
          end();
          return;
        }
        if (isMuted(channel)) dropped.push(channel);
        else client.write(frame);
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `amqp://guest:guest@127.0.0.1:${port}/`,
    mute: (channels) => {
      muted = channels === 'all-channels' ? channels : new Set(channels);
    },
    unmute: () => {
      muted = undefined;
    },
    dropped,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
