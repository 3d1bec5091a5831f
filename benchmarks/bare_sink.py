"""A bare aiosmtpd server that accepts every message and discards it (the baseline), or counts the
recipient copies it received into a file (the outbound sink for end-to-end runs).

    python benchmarks/bare_sink.py PORT [COUNT_FILE]
"""

import asyncio
import sys

from aiosmtpd.smtp import SMTP


class Discard:
    def __init__(self, count_file: str | None):
        self.count_file = count_file
        self.copies = 0

    async def handle_DATA(self, server, session, envelope):
        self.copies += len(envelope.rcpt_tos)
        return "250 OK"


async def main(port: int, count_file: str | None) -> None:
    handler = Discard(count_file)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="bare", data_size_limit=None, enable_SMTPUTF8=True),
        "127.0.0.1", port)
    print("ready", flush=True)
    if count_file:
        while True:
            await asyncio.sleep(0.05)
            with open(count_file + ".tmp", "w") as f:
                f.write(str(handler.copies))
            import os
            os.replace(count_file + ".tmp", count_file)
    else:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None))
