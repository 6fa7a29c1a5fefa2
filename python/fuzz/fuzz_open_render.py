"""Coverage-guided fuzzing of ``gscodec.open(bytes).render()`` with atheris.

Every input stands for a candidate .gsi file (`gsi_input.to_gsi`: valid CRCs
and a compressed payload are written by the harness, so that mutations reach
the payload decoder and the renderer). `GSIError` is the one expected failure
(the parser's and the decode-work limit's); any other
exception, and any crash or sanitizer report in the C++ core, is a finding.
See README.md for how to run it (and why under the ASan build).
"""


import atheris
import numpy as np

# Coverage of the codec's own Python code only (the parser, the quantizer, the
# render entry points): instrumenting numpy and PIL too would slow every
# execution and reward paths inside them.
with atheris.instrument_imports(include=["gscodec"]):
    import gscodec
    from gscodec import GSIError

import caps
from gsi_input import to_gsi


def TestOneInput(data: bytes) -> None:  # noqa: N802 (atheris' name)
    try:
        image = gscodec.open(to_gsi(data))
        width, height = caps.output_size(image.width, image.height)
        pixels = image.render((width, height))
    except GSIError:
        return
    caps.check_render(pixels, width, height, np.uint8)


if __name__ == "__main__":
    caps.fuzz(TestOneInput)
