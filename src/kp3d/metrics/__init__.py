"""kp3d.metrics"""
