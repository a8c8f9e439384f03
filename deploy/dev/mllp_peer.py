"""MLLP peer for chartbridge's HL7 v2 MDM tests: an HL7 v2 receiver built on
the `hl7` package's MLLP server (PyPI). It stores every message it receives
as <dir>/<MSH-10>.hl7 (and one byte per receipt in <MSH-10>.count) and answers with an original-mode ACK:

  AA                    normally
  AE / AR / CA          when the message text contains "[peer:AE]" / "[peer:AR]" / "[peer:CA]"
  (no answer)           the first time a message containing "[peer:silent-once]"
                        arrives (the sender must retry), AA the next time

usage: mllp_peer.py PORT DIR
"""

import asyncio
import os
import sys

import hl7
from hl7.mllp import start_hl7_server

PORT = int(sys.argv[1])
DIR = sys.argv[2]
seen = {}


async def handle(reader, writer):
    try:
        while not writer.is_closing():
            message = await reader.readmessage()
            text = str(message)
            control = str(message.segment("MSH")(10))
            seen[control] = seen.get(control, 0) + 1
            with open(os.path.join(DIR, f"{control}.hl7"), "w", encoding="utf-8") as f:
                f.write(text)
            with open(os.path.join(DIR, f"{control}.count"), "a", encoding="utf-8") as f:
                f.write("x")
            if "[peer:silent-once]" in text and seen[control] == 1:
                continue
            code = "AA"
            if "[peer:AE]" in text:
                code = "AE"
            elif "[peer:AR]" in text:
                code = "AR"
            elif "[peer:CA]" in text:
                code = "CA"
            writer.writemessage(message.create_ack(ack_code=code))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main():
    os.makedirs(DIR, exist_ok=True)
    server = await start_hl7_server(handle, host="127.0.0.1", port=PORT, encoding="utf-8")
    print(f"MLLP peer on 127.0.0.1:{PORT}, messages in {DIR}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
