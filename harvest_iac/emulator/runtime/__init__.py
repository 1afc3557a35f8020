"""The local Modal's runtime: what runs deployed code (containers, images, scheduling).

No protobuf and no gRPC here: the API services translate requests into calls on this layer.
"""
