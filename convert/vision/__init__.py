"""Vision towers, beside graph.py's text blocks: each turns an image (as GenAI's VLMPipeline
preprocesses it in C++) into the language model's input embeddings.

An architecture in convert/models names its tower as it names its decoder layer: its module's
`vision_models(config, weights, compress)` returns {role: ov.Model}, each written as
`openvino_{role}_model.xml` (roles as GenAI names them: vision_embeddings, vision_embeddings_merger,
vision_embeddings_pos). Each tower takes its tensors from `weights` (checkpoint names) as it uses them
and passes every weight it multiplies by through `compress(name, tensor, "linear")`.
"""
