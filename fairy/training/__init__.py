"""Training for Fairy: ``fairy train`` (InstructPix2Pix loss with equivariant finetuning) and the small model.

* ``augment``: the equivariant affine augmentation, one transform for a source and its edit;
* ``edits``: the procedural edits (exact functions of the source) the small model learns;
* ``data``: triplet folders and ``builtin:procedural`` data;
* ``loop``: the resumable optimisation loop; ``trainer``: ``fairy train``;
* ``anchored``: anchored training (``--anchors K``), each example a tiny clip through Fairy's two passes;
* ``small_model``: the small model's architecture; ``recipe``: ``fairy train-small``;
* ``evaluate``: scores on held-out photographs; ``clips``: moving test clips with known edits.

Importing this package loads nothing heavy; each module imports torch itself.
"""
