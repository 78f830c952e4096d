"""Fairy Edit: instruction-guided video edits on Blender's sequencer strips (Blender 4.2 LTS to 5.x).

Installed from the built zip, this package is ``bl_ext.<repo>.fairy_edit`` and
its wheels provide the plugin core; run from this repository it is
``fairy_plugin.blender``. Nothing Blender-specific is imported at module level,
so the build script (``python -m fairy_plugin.blender.build``) and the plain
modules (compat, strips, placement, jobs) import without Blender.
"""


def register():
    from . import ui

    ui.register()


def unregister():
    from . import ui

    ui.unregister()
