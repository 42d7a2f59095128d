"""Lightning callbacks: the one evaluation path (``evaluator.Evaluator``) and the one picture path
(``images.ImageLogger``, with the latent-space pictures of ``latent_pictures``)."""
