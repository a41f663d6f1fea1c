"""The default world: simulated users over rendered or real-glyph catalogues.

One builder per scenario, each a pure function of its config section, the
assets folder, the image size and a seed (same inputs, byte-identical images
and tables):

* :func:`pmg.data.world.clothing.build_clothing_world`: Fashion-MNIST
  silhouettes in named colours and patterns; users with a latent colour and
  pattern who click.
* :func:`pmg.data.world.emoji.build_emoji_world`: Noto Color Emoji glyphs;
  users with a latent character who used emoji, then chat with one emotion.
* :func:`pmg.data.world.posters.render_posters`: posters for MovieLens movies
  that have none (the movie users are real).

Latent preferences go to the `GroundTruth` table only, for evaluation.
Modules are imported on use, so importing this package stays cheap.
"""
