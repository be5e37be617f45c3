// What the core asks of the avatar. The Unity side implements it on top of UniVRM (MateAvatar,
// which hands each call to the main thread); tests implement it by recording the calls.
// A method that cannot do what it is asked throws AvatarException with the reason, which goes
// back to mate in the reply.

using System;

namespace Mate.Unity
{
    public interface IAvatar
    {
        void LoadVrm(string path);
        /// <param name="intensity">0 to 1.</param>
        /// <param name="transitionMs">How long the change takes.</param>
        void SetExpression(string expression, float intensity, int transitionMs);
        void PlayAnimation(string name, bool loop);
        void SetBlink(bool enabled);
    }

    public sealed class AvatarException : Exception
    {
        public AvatarException(string message) : base(message) { }
    }
}
