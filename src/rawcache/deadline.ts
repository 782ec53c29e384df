/**
 * What `work` resolves to, or a rejection with the error `expired()` returns when `work` takes
 * longer than `ms`. `work` itself is not stopped; the caller decides what expiry means (and
 * `expired` may act on it, e.g. drop a connection, before it returns the error).
 */
export async function withDeadline<T>(work: Promise<T>, ms: number, expired: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(expired()), ms);
  });
  try {
    return await Promise.race([work, deadline]);
  } finally {
    clearTimeout(timer);
  }
}
