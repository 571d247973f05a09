# SPDX-License-Identifier: GPL-3.0-or-later
"""GAN training of the IDE-3D generator: data sources, dual discriminator, losses, the resumable loop,
multi-process training and download-free metrics (see docs/training.md). ``training.procedural`` holds
the procedural heads. Importing this package imports nothing heavy."""
