"""The local detector page of ``clipflow-serve``: a Gradio front over the same
:class:`~clipflow.detect.Detector` as clipflow-detect (no second scoring path).

:mod:`.uploads` scores uploaded files into detect's records and reads the checkpoint's card
facts, :mod:`.render` turns them into the page's HTML, :mod:`.page` builds and launches the
Gradio page (the optional extra ``clipflow[serve]``). Only :mod:`.page` imports Gradio.
"""
